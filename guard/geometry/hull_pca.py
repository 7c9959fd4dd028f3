"""The PCA bound behind the hull's opt-in ``scan="pca"`` full rounds.

With the training mean ``mu``, k principal directions ``U`` (d x k), float32 coefficients ``c_t``
(N x k) and residual norms ``r_t >= ||(t - mu) - U c_t||`` (stored rounded up), Cauchy-Schwarz
gives ``g.t <= g.mu + (U^T g).c_t + ||g_perp|| r_t + E`` for every training point, where ``E``
bounds every rounding error (the float32 scan, the float32 query vector, the coefficients' own
rounding through ``max_t ||U^T res_t||``). A full round then reads N x k numbers instead of N x d
and evaluates exactly only the points whose bound exceeds a target (:meth:`PcaBound.bound`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .floats import U32, U64, blocks, down32, round_up32


@dataclass(frozen=True, eq=False)
class PcaMax:
    """A rigorous bound on ``max_t g.t`` from :meth:`PcaBound.bound`.

    Attributes:
        m: ``>= max_t g.t`` over all N points, the exact maximum (plus a float64 slack)
            whenever it exceeds the threshold; ``None`` (nothing evaluated) when there were
            more candidates than the cap.
        candidates: (n,) indices of the points whose bound exceeds the threshold.
        values: (n,) their float32 values ``T[candidates] g32`` (empty when ``m`` is None).
        bound_all: ``>= max_t g.t`` from the PCA bound alone (no point evaluated).
    """

    m: float | None
    candidates: np.ndarray
    values: np.ndarray
    bound_all: float


@dataclass(frozen=True, eq=False)
class PcaBound:
    """Coefficients and error constants of the bound over N points in d dimensions; build with
    :meth:`fit`.

    Attributes:
        k: principal directions.
        mu: (d,) float64 training mean.
        U: (d, k) float64 orthonormal principal directions.
        C: (N, k) float32 coefficients ``fl32(U^T (t - mu))``.
        r: (N,) float32 residual norms ``>= ||(t - mu) - U c_t||`` (rounded up).
        c_max: ``>= max_t ||c_t||``.
        r_max: ``max_t r_t``.
        e_max: ``>= max_t ||U^T res_t||`` (the coefficients' own rounding).
        mu_norm: ``||mu||``.
        explained_variance: variance fraction the k directions explain.
    """

    k: int
    mu: np.ndarray
    U: np.ndarray
    C: np.ndarray
    r: np.ndarray
    c_max: float
    r_max: float
    e_max: float
    mu_norm: float
    explained_variance: float

    @classmethod
    def fit(
        cls, points: np.ndarray, scan: str, pca_k: int | None, residual: float, seed: int
    ) -> PcaBound | None:
        """The bound for float32 ``points`` (N, d); None where ``scan="auto"`` finds it not worth
        it (tiny N, or more than d/2 directions needed for ``residual`` of the variance)."""
        N, d = points.shape
        if N < 4096 and scan == "auto":
            return None  # tiny: the exact scan is cheap already
        mu = np.zeros(d)
        for b in blocks(points):
            mu += b.sum(axis=0)
        mu /= N
        w, V = _spectrum(points, mu, seed)
        left = 1.0 - np.cumsum(w) / max(float(w.sum()), 1e-300)  # residual variance fraction
        k = int(pca_k) if pca_k is not None else int(np.argmax(left <= residual)) + 1
        k = int(min(max(k, 1), d))
        if scan == "auto" and k > d // 2:
            return None  # the residual bound would be too loose: the exact scan wins
        return cls._coefficients(
            points, mu, np.ascontiguousarray(V[:, :k]), float(1.0 - left[k - 1])
        )

    @classmethod
    def _coefficients(
        cls, points: np.ndarray, mu: np.ndarray, U: np.ndarray, explained_variance: float
    ) -> PcaBound:
        """Coefficients (N, k), residual norms (N,) and error constants of ``points`` (N, d)
        for the mean ``mu`` (d,) and the directions ``U`` (d, k)."""
        N, d = points.shape
        k = U.shape[1]
        C = np.empty((N, k), dtype=np.float32)
        r = np.empty(N, dtype=np.float32)
        eps = 4.0 * (d + k + 2) * U64  # generous bound on the float64 relative errors below
        sk = float(np.sqrt(k))
        c_max = r_max = e_max = 0.0
        lo = 0
        for b in blocks(points):  # bounded float64 temporaries
            hi = lo + len(b)
            b -= mu  # t - mu, relative error <= u64 (absorbed by eps below)
            c32 = (b @ U).astype(np.float32)
            c64 = c32.astype(np.float64)
            res = b - c64 @ U.T  # residual of the *stored* coefficients
            rn = np.sqrt(np.einsum("ij,ij->i", res, res))
            cn = np.sqrt(np.einsum("ij,ij->i", c64, c64))
            # |computed res - exact res| <= eps (||t - mu|| + sqrt(k) ||c|| + ||res||) per row
            err = eps * (
                np.sqrt(np.einsum("ij,ij->i", b, b)) + sk * cn + rn + float(np.linalg.norm(mu))
            )
            C[lo:hi] = c32
            r[lo:hi] = round_up32(rn * (1 + eps) + err)
            # ||U^T res_t||: the coefficients' own rounding (res_t is not exactly orthogonal)
            ures = np.sqrt(np.einsum("ij,ij->i", res @ U, res @ U)) + 1.01 * err
            e_max = max(e_max, float(ures.max()))
            c_max = max(c_max, float(cn.max()))
            r_max = max(r_max, float(r[lo:hi].max()))
            lo = hi
        return cls(
            k=k,
            mu=mu,
            U=U,
            C=C,
            r=r,
            c_max=c_max * (1 + eps),
            r_max=r_max,
            e_max=e_max * (1 + eps),
            mu_norm=float(np.linalg.norm(mu)),
            explained_variance=explained_variance,
        )

    def bound(
        self,
        g: np.ndarray,
        h: np.ndarray,
        z: np.ndarray,
        theta: float,
        exact: Callable[[np.ndarray], tuple[np.ndarray, float]],
        cap: int | None = None,
    ) -> PcaMax:
        """Rigorous upper bound ``m >= max_t g.t`` for ``g`` (d,) from the PCA scan
        ``z = fl32(C fl32(h))`` (N,), ``h = fl(U^T g)`` (k,): the points whose bound exceeds
        ``theta`` (the candidates) are evaluated exactly, every other point is bounded by
        ``theta``-or-less. ``m`` is the exact maximum whenever it exceeds ``theta``.

        ``exact(rows)`` gives the float32 values ``T[rows] g32`` and the certified maximum
        ``>= max_{t in rows} g.t`` (the hull's exact evaluation).

        ``m`` is None (nothing evaluated) when there are more than ``cap`` candidates.
        """
        d, k = self.U.shape
        eps = 4.0 * (d + k + 2) * U64  # generous float64 relative error of the small products
        gn = float(np.linalg.norm(g))
        sk = float(np.sqrt(k))
        h32 = h.astype(np.float32)
        hn, h32n = float(np.linalg.norm(h)), float(np.linalg.norm(h32.astype(np.float64)))
        dh = 1.01 * eps * sk * gn  # >= ||fl(U^T g) - U^T g||
        # >= ||g - U U^T g|| (exact) from the computed residual of g
        s = float(np.linalg.norm(g - self.U @ h)) * (1 + eps) + 1.01 * dh + eps * (gn + sk * hn)
        s32 = round_up32(np.array([s]))[0]
        gk = k * U32 / (1 - k * U32)
        cz = self.c_max * h32n
        # g.t = g.mu + (U^T g).c_t + (U^T g).(U^T res_t) + g_perp.res_t, every term bounded:
        E = (
            gk * cz  # float32 GEMV C h32 (Higham 3.5)
            + (float(np.linalg.norm(h - h32.astype(np.float64))) * (1 + eps) + dh) * self.c_max
            + (hn + dh) * self.e_max  # (U^T g).(U^T res_t): the coefficients' own rounding
            + 3 * U32 * (cz * (1 + gk) + float(s32) * self.r_max)  # w = fl32(z + s32 r)
            + eps * gn * self.mu_norm
        )  # a0 = fl(g.mu)
        a0 = float(g @ self.mu)
        # for every t: g.t <= a0 + w_t + E with w = fl32(z + s32 r)   (Cauchy-Schwarz)
        w = self.r * s32
        w += z
        slack = eps * (abs(theta) + abs(a0) + E)  # float64 rounding of the threshold
        thr = down32(theta - a0 - E - slack)
        cand = np.flatnonzero(w > thr)
        bound_all = a0 + float(w.max()) + E + slack
        if cap is not None and len(cand) > cap:
            return PcaMax(None, cand, np.empty(0, dtype=np.float32), bound_all)
        rest = _max_outside(w, cand)  # <= thr
        m = a0 + rest + E + slack if rest > -np.inf else -np.inf
        x = np.empty(0, dtype=np.float32)
        if len(cand):
            x, m_cand = exact(cand)
            m = max(m, m_cand)
        return PcaMax(m, cand, x, bound_all)


def _spectrum(points: np.ndarray, mu: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (d,), largest first and clipped at 0, and eigenvectors (d, d) (columns, same
    order) of the scatter matrix of ``points`` (N, d) about ``mu`` (d,), from at most 50,000
    rows drawn with ``seed``."""
    N, d = points.shape
    fit = (
        points
        if N <= 50_000
        else points[np.sort(np.random.default_rng(seed + 2).choice(N, 50_000, replace=False))]
    )
    cov = np.zeros((d, d))
    for b in blocks(fit):
        b -= mu
        cov += b.T @ b
    w, V = np.linalg.eigh(cov)
    return np.maximum(w[::-1], 0), V[:, ::-1]


def _max_outside(w: np.ndarray, idx: np.ndarray) -> float:
    """``max`` of ``w`` over the entries not in ``idx``."""
    if len(idx) == 0:
        return float(w.max())
    if len(idx) == len(w):
        return -np.inf
    saved = w[idx].copy()
    w[idx] = -np.inf
    out = float(w.max())
    w[idx] = saved
    return out
