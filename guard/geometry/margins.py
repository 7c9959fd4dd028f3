"""Exact distance from a feature vector to every decision boundary of an affine classifier.

Implements eq. 7-12 of the paper. For a feature vector ``x`` predicted as class ``i`` and any
other class ``j``, the margin is the distance from ``x`` to the nearest point ``y`` with

    (w_i - w_j) . y + b_i - b_j = 0                  (eq. 7, on the i|j boundary)
    (w_i - w_k) . y + b_i - b_k >= 0   for all k     (eq. 8, i and j still on top)
    y >= 0                              if the feature space is nonnegative (eq. 10)

Per pair, from cheap to exact, each step a lower bound of the margin that is exact when its
solution satisfies all constraints:

1. The closed form ``|(w_i-w_j).x + b_i-b_j| / ||w_i-w_j||`` (distance to the hyperplane).
2. With ``y >= 0``: the projection onto ``{y >= 0, on the hyperplane}`` (:mod:`guard.orthant`,
   vectorised over all pairs). On real ReLU features it is exact for most pairs, where the
   closed form is exact for few.
3. Otherwise the convex QP is solved exactly by a dual active-set method, which returns
   multipliers: each exact margin comes with a certificate, a dual lower bound; the reported
   ``certificate_gap`` is ``primal distance - dual lower bound`` (~1e-14). With the compiled core
   (:mod:`guard.geometry.native`, ``margin_qp.hpp``: Goldfarb-Idnani on the Gram matrix of the
   active constraints) the QPs of a chunk's pairs are solved in one call; a pair it does not
   solve cleanly, and every pair without the core, goes to
   :func:`guard.geometry.qp.pair_margin` (DAQP, then NNLS).

A boundary that cannot be reached (e.g. class j never borders class i inside x >= 0) gets ``inf``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np

from . import native
from .errors import GeometryError
from .orthant import project_hyperplane_orthant
from .progress import progress_bar
from .qp import pair_margin

# A foot point counts as feasible if it violates no constraint by more than this (relative to
# the scale of the constraint); anything beyond goes to the exact solver.
_FEAS_TOL = 1e-9


@dataclass(frozen=True)
class Margins:
    """Margins of N inputs in a classifier with n classes and f features.

    Attributes:
        pred: (N,) int64 predicted class (argmax of the logits).
        margins: (N, n) float64 exact distance to the pred|j boundary; NaN at j = pred,
            inf where that boundary is unreachable. Only filled where computed (see ``d_min_only``).
        closed_form: (N, n) float64 hyperplane distance, a lower bound of ``margins``.
        d_min: (N,) float64 smallest margin (eq. 12).
        nearest_class: (N,) int64 class of the nearest boundary (-1 if none is reachable).
        flip_point: (N, f) float64 closest point on the boundary with ``nearest_class``.
        certificate_gap: (N,) float64 largest primal-dual gap among the exact solves of the row
            (0 where every margin came from a feasible closed-form foot point).
        n_qp: (N,) int64 number of QPs solved for the row.
    """

    pred: np.ndarray
    margins: np.ndarray
    closed_form: np.ndarray
    d_min: np.ndarray
    nearest_class: np.ndarray
    flip_point: np.ndarray
    certificate_gap: np.ndarray
    n_qp: np.ndarray


def exact_pair_margin(
    x: np.ndarray, W: np.ndarray, b: np.ndarray, i: int, j: int, nonneg: bool
) -> tuple[float, np.ndarray | None, float]:
    """Exact i|j margin of one feature vector by the active-set QP.

    Returns ``(distance, flip_point, certificate_gap)``; ``(inf, None, 0)`` if unreachable.
    """
    return pair_margin(np.asarray(x, dtype=np.float64), W, b, i, j, nonneg)


def _satisfies_eq8(Y: np.ndarray, W: np.ndarray, b: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Whether the points Y (..., f) keep ``pred`` (weakly) on top (eq. 8), within tolerance."""
    z = Y @ W.T + b
    zi = np.take_along_axis(z, pred.reshape(pred.shape + (1,) * (z.ndim - pred.ndim)), axis=-1)
    scale = 1.0 + np.abs(z).max(axis=-1, keepdims=True)
    return (zi - z >= -_FEAS_TOL * scale).all(axis=-1)


def relaxed_margins(
    X: np.ndarray,
    W: np.ndarray,
    b: np.ndarray,
    pred: np.ndarray,
    nonneg: bool,
    orthant: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Steps 1-2 for every pair: lower bounds, their points, and where they are exact.

    Args:
        X: (N, f) float64 features. W: (n, f). b: (n,). pred: (N,) predicted classes.
        orthant: run step 2 for every pair now (False: the caller runs it lazily per pair).

    Returns:
        closed (N, n): hyperplane distances (NaN at pred);
        lower (N, n): the best lower bound (closed form, or the orthant projection);
        point (N, n, f): the point attaining ``lower``;
        exact (N, n): ``lower`` is the exact margin (its point satisfies every constraint);
        gap (N, n): certificate gap of the orthant step (0 for the closed form).
    """
    N, n = X.shape[0], W.shape[0]
    A = W[pred][:, None, :] - W[None, :, :]  # (N, n, f): w_i - w_j
    c = b[pred][:, None] - b[None, :]  # (N, n)
    s = np.einsum("nkf,nf->nk", A, X) + c  # >= 0 since i = argmax
    norm2 = np.einsum("nkf,nkf->nk", A, A)
    rows = np.arange(N)
    with np.errstate(divide="ignore", invalid="ignore"):
        closed = np.where(norm2 > 0, s / np.sqrt(norm2), np.where(s == 0, 0.0, np.inf))
        step = np.where(norm2 > 0, s / norm2, 0.0)
    closed[rows, pred] = np.nan
    point = X[:, None, :] - step[..., None] * A
    exact = _satisfies_eq8(point, W, b, np.repeat(pred[:, None], n, axis=1))
    if nonneg:
        fscale = 1.0 + np.abs(X).max(axis=1)[:, None, None]
        exact &= (point >= -_FEAS_TOL * fscale).all(axis=2)
    finite = np.isfinite(closed)
    exact &= finite
    exact[rows, pred] = False
    lower = closed.copy()
    gap = np.zeros((N, n))
    todo = ~exact & finite
    todo[rows, pred] = False
    if nonneg and orthant and todo.any():
        r, j = np.nonzero(todo)
        y, _, low = project_hyperplane_orthant(X[r], A[r, j], -c[r, j])
        empty = ~np.isfinite(low)  # no y >= 0 on the hyperplane: unreachable
        d = np.linalg.norm(y - X[r], axis=1)
        ok = ~empty & _satisfies_eq8(y, W, b, pred[r])
        lower[r, j] = np.where(empty, np.inf, np.maximum(low, closed[r, j]))
        point[r[~empty], j[~empty]] = y[~empty]
        exact[r, j] = ok | empty
        lower[r[ok], j[ok]] = np.maximum(d[ok], closed[r[ok], j[ok]])
        gap[r[ok], j[ok]] = np.maximum(d[ok] - low[ok], 0.0)
    return closed, lower, point, exact, gap


def compute_margins(
    X: np.ndarray,
    W: np.ndarray,
    b: np.ndarray,
    nonneg: bool,
    *,
    d_min_only: bool = False,
    chunk_bytes: int = 64 << 20,
    progress: bool = False,
) -> Margins:
    """Exact margins of every row of ``X`` to every decision boundary.

    Args:
        X: (N, f) features (any float dtype; computed in float64).
        W: (n, f) weights of the final affine layer, b: (n,) biases (logits = X W^T + b).
        nonneg: add the constraint y >= 0 (feature space of ReLU outputs).
        d_min_only: compute only what ``d_min`` needs: classes are visited in increasing order of
            their closed-form lower bound and the search stops once that bound reaches the best
            exact margin. Margins that were not needed stay NaN.
        chunk_bytes: memory budget of the vectorised closed form (foot points and their logits).
        progress: show a progress bar.

    Returns:
        A :class:`Margins`.
    """
    X = np.asarray(X, dtype=np.float64)
    W = np.asarray(W, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64).reshape(-1)
    if X.ndim != 2 or W.ndim != 2 or X.shape[1] != W.shape[1] or b.shape[0] != W.shape[0]:
        raise GeometryError(
            f"expected features (N, {W.shape[1] if W.ndim == 2 else 'f'}), W (n, f), b (n,); "
            f"got X {X.shape}, W {W.shape}, b {b.shape}"
        )
    if W.shape[0] < 2:
        raise GeometryError(f"a classifier needs at least 2 classes, W has {W.shape[0]} rows")
    if not np.all(np.isfinite(X)):
        raise GeometryError("features contain NaN or Inf")
    N, f = X.shape
    n = W.shape[0]
    # With many classes and only d_min wanted, most pairs are pruned by their closed form:
    # refine the survivors one at a time instead of all pairs up front (the foot points of all
    # pairs and their n logits each would cost n^2 f per sample: 2 GFLOP at 1,000 x 2,048).
    lazy = d_min_only and n > 32
    # logits once (per chunk of rows in the lazy path, which reuses them for the closed forms)
    pred = np.empty(N, dtype=np.int64)
    for lo in range(0, 0 if lazy else N, 4096):
        pred[lo : lo + 4096] = np.argmax(X[lo : lo + 4096] @ W.T + b, axis=1)
    margins = np.full((N, n), np.nan)
    closed = np.full((N, n), np.nan)
    d_min = np.full(N, np.inf)
    nearest = np.full(N, -1, dtype=np.int64)
    flip = np.full((N, f), np.nan)
    gap = np.zeros(N)
    n_qp = np.zeros(N, dtype=np.int64)
    # (the lazy path holds about eight (rows, n) float64 arrays per chunk; the full one a foot
    # point and its n logits per pair)
    chunk = max(1, chunk_bytes // (8 * n * (8 if lazy else f + n)))
    problems = _pair_problems(W, b, nonneg)  # each pair's QP data, built once
    # the QPs in one call per chunk (the compiled core) for all margins of narrow features: at 64
    # features 1.4-3x less time than DAQP row by row (real and synthetic ReLU features), at 512
    # 0.9x (bench/margins.py); d_min_only visits pairs row by row
    core = None if d_min_only or f > _NATIVE_MAX_FEATURES else native.use("auto")
    with progress_bar(N, "margins", enabled=progress) as bar:
        for lo in range(0, N, chunk):
            sl = slice(lo, min(lo + chunk, N))
            screen = None
            if lazy:  # closed forms only; each visited pair is refined in _row_margins
                z = X[sl] @ W.T + b
                pred[sl] = np.argmax(z, axis=1)
                cf, screen = _closed_forms(W, b, z, pred[sl])
                lower, point, exact, pgap = cf.copy(), None, np.zeros(cf.shape, bool), None
            else:
                cf, lower, pt, exact, pg = relaxed_margins(X[sl], W, b, pred[sl], nonneg)
                if core is not None:  # the QPs of every pair left, in one call
                    closed[sl] = cf
                    _all_pairs(
                        core, X[sl], W, b, pred[sl], lower, pt, exact, pg, nonneg, problems,
                        (margins[sl], d_min[sl], nearest[sl], flip[sl], gap[sl], n_qp[sl]),
                    )  # fmt: skip
                    bar.update(cf.shape[0])
                    continue
                point, pgap = pt, pg
            closed[sl] = cf
            job = _Chunk(
                X[sl], W, b, pred[sl], lower, point, exact, pgap, nonneg, d_min_only, problems,
                screen, (margins[sl], d_min[sl], nearest[sl], flip[sl], gap[sl], n_qp[sl]),
            )  # fmt: skip
            if not lazy:
                for r in range(cf.shape[0]):
                    job.row(r)
                    bar.update(1)
                continue
            # Lazy: a point that passes the rivals' check is taken as feasible and checked
            # against all of W afterwards, for the chunk's points together (one product with W
            # instead of one per point); the rows where one of them fails are redone with the
            # full check at once.
            claims: list[tuple[int, np.ndarray]] = []
            for r in range(cf.shape[0]):
                job.row(r, partial(_claim, claims, r))
            if claims:
                who = np.array([r for r, _ in claims])
                ok = _satisfies_eq8(np.stack([y for _, y in claims]), W, b, pred[sl][who])
                for r in np.unique(who[~ok]):
                    lower[r], exact[r] = cf[r], False
                    margins[lo + r] = np.nan
                    flip[lo + r] = np.nan
                    job.row(int(r))
            bar.update(cf.shape[0])
    return Margins(pred, margins, closed, d_min, nearest, flip, gap, n_qp)


def _all_pairs(
    core,
    X: np.ndarray,
    W: np.ndarray,
    b: np.ndarray,
    pred: np.ndarray,
    lower: np.ndarray,
    point: np.ndarray,
    exact: np.ndarray,
    pgap: np.ndarray,
    nonneg: bool,
    problems: dict,
    out: tuple[np.ndarray, ...],
) -> None:
    """Every margin of a chunk's rows at once (what :func:`_row_margins` gives row by row): the
    pairs that steps 1-2 left inexact go to the compiled QP in one call, and the ones it does
    not solve cleanly to :func:`pair_margin`; then, per row, ``d_min``, the nearest class (ties
    go to the smaller lower bound, as in the row order), its flip point and the largest gap."""
    margins, d_min, nearest, flip, gap, n_qp = out
    m, n = lower.shape
    rows = np.arange(m)
    todo = ~exact
    todo[rows, pred] = False
    r, j = np.nonzero(todo)
    # a pair whose orthant projection (step 2) sits on many bounds y_l = 0 goes to DAQP at once
    # (the compiled QP hands back more than 40 active constraints: see margin_qp.hpp)
    light = (point[r, j] <= 0).sum(axis=1) <= _LIGHT_BOUNDS if nonneg else np.ones(len(r), bool)
    d, Y, g = np.full(len(r), np.nan), np.full((len(r), X.shape[1]), np.nan), np.zeros(len(r))
    status = np.full(len(r), 2, dtype=np.int8)  # 2: not solved there (the heavy pairs)
    d[light], Y[light], g[light], status[light], _ = core.margin_qps(
        X, np.ascontiguousarray(W), np.ascontiguousarray(b), pred, r[light], j[light], bool(nonneg)
    )
    for p in np.flatnonzero(status != 0):
        dp, yp, g[p] = pair_margin(X[r[p]], W, b, int(pred[r[p]]), int(j[p]), nonneg, problems)
        d[p] = dp
        Y[p] = np.nan if yp is None else yp
    # the exact value is never below a lower bound; solver rounding may put it a hair under
    M = np.where(exact, lower, np.nan)
    M[r, j] = np.maximum(d, lower[r, j])
    M[rows, pred] = np.nan
    margins[:] = M
    G = np.where(exact, pgap, 0.0)
    G[r, j] = g
    G[rows, pred] = 0.0
    gap[:] = G.max(axis=1)
    n_qp[:] = np.bincount(r, minlength=m)
    filled = np.where(np.isnan(M), np.inf, M)
    best = filled.min(axis=1)
    rank = np.argsort(np.argsort(np.where(np.isnan(lower), np.inf, lower), axis=1, kind="stable"))
    reach = np.isfinite(best)
    tie = np.where((filled == best[:, None]) & reach[:, None], rank, n)
    jstar = tie.argmin(axis=1)
    d_min[:] = best
    nearest[:] = np.where(reach, jstar, -1)
    pts = point[rows, jstar]
    at = np.full((m, n), -1)
    at[r, j] = np.arange(len(r))
    k = at[rows, jstar]
    pts[k >= 0] = Y[k[k >= 0]]
    flip[reach] = pts[reach]


def _claim(claims: list[tuple[int, np.ndarray]], r: int, y: np.ndarray) -> None:
    """Record that row r took point y as feasible (checked later, with the chunk's others)."""
    claims.append((r, y))


@dataclass(frozen=True, eq=False)
class _Chunk:
    """A chunk of rows of :func:`compute_margins`: its inputs (X, pred and the per-pair arrays
    of steps 1-2 are the chunk's rows) and where its results go (``out``: views of margins,
    d_min, nearest class, flip point, gap and QP count)."""

    X: np.ndarray
    W: np.ndarray
    b: np.ndarray
    pred: np.ndarray
    lower: np.ndarray
    point: np.ndarray | None  # None: lazy (closed forms only)
    exact: np.ndarray
    pgap: np.ndarray | None
    nonneg: bool
    d_min_only: bool
    problems: dict
    screen: _Screen | None
    out: tuple[np.ndarray, ...]

    def row(self, r: int, defer: Callable[[np.ndarray], None] | None = None) -> None:
        """Row r's margins (:func:`_row_margins`), written to ``out``."""
        margins, d_min, nearest, flip, gap, n_qp = self.out
        n = self.W.shape[0]
        d_min[r], nearest[r], pt, gap[r], n_qp[r] = _row_margins(
            self.X[r],
            self.W,
            self.b,
            int(self.pred[r]),
            self.lower[r],
            None if self.point is None else self.point[r],
            self.exact[r],
            np.zeros(n) if self.pgap is None else self.pgap[r],
            self.point is None,
            self.nonneg,
            self.d_min_only,
            margins[r],
            self.problems,
            self.screen,
            defer,
        )
        if pt is not None:
            flip[r] = pt


# Pair QPs (qp.PairProblem) of the last few heads, by a digest of (W, b, nonneg): building one
# costs several times DAQP's solve, and a guard scores every batch against the same head.
_PROBLEMS: dict[bytes, dict] = {}
_PROBLEM_HEADS = 4  # heads kept
_PROBLEM_BYTES = 64 << 20  # cache a head only if all its n (n - 1) pairs fit in this


def _pair_problems(W: np.ndarray, b: np.ndarray, nonneg: bool) -> dict:
    """The dict of pair QPs to use for (W, b, nonneg): a cached one when the head is small
    enough for all its pairs to be kept, else a fresh one (this call's own)."""
    n, f = W.shape
    if n * n * n * f * 8 > _PROBLEM_BYTES:
        return {}
    h = hashlib.blake2b(digest_size=16)
    h.update(np.ascontiguousarray(W).tobytes())
    h.update(np.ascontiguousarray(b).tobytes())
    h.update(bytes([nonneg]) + repr(W.shape).encode())
    key = h.digest()
    found = _PROBLEMS.get(key)
    if found is None:
        for old in list(_PROBLEMS)[: max(len(_PROBLEMS) - _PROBLEM_HEADS + 1, 0)]:
            _PROBLEMS.pop(old, None)  # the oldest heads (pop: safe if another thread did)
        found = _PROBLEMS[key] = {}
    return found


@dataclass(frozen=True)
class _Screen:
    """Bounds that let a feasibility check (eq. 8) reject a point from a few rival classes:
    ``1 + w_max ||y|| + b_max >= 1 + max_k |w_k.y + b_k|``, the scale of the full check's
    tolerance, so a rival violating by more than the tolerance at this scale fails the full
    check too."""

    w_max: float  # largest row norm of W
    b_max: float  # largest |b_k|

    def keeps_top(
        self, y: np.ndarray, W: np.ndarray, b: np.ndarray, i: int, rivals: np.ndarray
    ) -> bool:
        """:func:`_satisfies_eq8` for one point ``y`` (f,) and class ``i``, the ``rivals``
        (the classes likeliest to beat i) tried first: most points that fail, fail there,
        without the product with all of W."""
        return self.rivals_ok(y, W, b, i, rivals) and bool(_satisfies_eq8(y, W, b, np.array(i)))

    def rivals_ok(
        self, y: np.ndarray, W: np.ndarray, b: np.ndarray, i: int, rivals: np.ndarray
    ) -> bool:
        """False when one of the ``rivals`` already makes ``y`` fail :func:`_satisfies_eq8`."""
        if len(rivals) == 0:
            return True
        zi = float(W[i] @ y) + float(b[i])
        zr = W[rivals] @ y + b[rivals]
        scale = (1.0 + self.w_max * float(np.sqrt(y @ y)) + self.b_max) * (1.0 + 1e-12)
        return not bool((zi - zr < -_FEAS_TOL * scale).any())


#: pairs whose orthant projection has more zero coordinates than this skip the compiled QP
_LIGHT_BOUNDS = 24
#: widest features whose margin QPs go to the compiled core
_NATIVE_MAX_FEATURES = 128
_RIVALS = 16  # rival classes a feasibility check tries first (by their closed-form bound)


def _closed_forms(
    W: np.ndarray, b: np.ndarray, z: np.ndarray, pred: np.ndarray
) -> tuple[np.ndarray, _Screen]:
    """Step 1 only: (N, n) hyperplane distances ``(z_i - z_j) / ||w_i - w_j||`` (NaN at pred),
    from the logits ``z`` (N, n) (with b) and one product ``W[pred] W^T`` (O(n f) per row, no foot
    points); and the :class:`_Screen` of (W, b)."""
    N = z.shape[0]
    rows = np.arange(N)
    # (a product of its own: for a row or two, numpy's [X; W[pred]] W^T in one GEMM took 3 to
    # 5 times as long as two matrix-vector products)
    G = W[pred] @ W.T
    s = z[rows, pred][:, None] - z  # >= 0 since i = argmax
    wn = np.einsum("kf,kf->k", W, W)
    norm2 = wn[pred][:, None] + wn[None, :] - 2.0 * G
    # the expanded norm loses accuracy when w_i ~ w_j: recompute those pairs directly
    close = norm2 <= 1e-6 * (wn[pred][:, None] + wn[None, :])
    if close.any():
        r, j = np.nonzero(close)
        diff = W[pred[r]] - W[j]
        norm2[r, j] = np.einsum("pf,pf->p", diff, diff)
    norm2 = np.maximum(norm2, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        closed = np.where(norm2 > 0, s / np.sqrt(norm2), np.where(s == 0, 0.0, np.inf))
    closed[rows, pred] = np.nan
    return closed, _Screen(float(np.sqrt(wn.max())), float(np.abs(b).max()))


def _foot_point(
    x: np.ndarray,
    W: np.ndarray,
    b: np.ndarray,
    i: int,
    j: int,
    nonneg: bool,
    keeps_top: Callable[[np.ndarray], bool] | None = None,
) -> tuple[float, np.ndarray, bool]:
    """Step 1 for one pair: (hyperplane distance, foot point, whether it satisfies every
    constraint, i.e. the distance is the exact margin). ``keeps_top``: the check of eq. 8 for
    the foot point (default :func:`_satisfies_eq8`); it runs only when the cheap ``y >= 0``
    check passed."""
    a = W[i] - W[j]
    s = float(a @ x) + float(b[i] - b[j])
    n2 = float(a @ a)
    if n2 == 0:
        return (0.0 if s == 0 else np.inf), x.copy(), s == 0
    y = x - (s / n2) * a
    ok = not nonneg or bool((y >= -_FEAS_TOL * (1.0 + np.abs(x).max())).all())
    if ok:
        ok = keeps_top(y) if keeps_top is not None else bool(_satisfies_eq8(y, W, b, np.array(i)))
    return abs(s) / np.sqrt(n2), y, ok


def _row_margins(
    x: np.ndarray,
    W: np.ndarray,
    b: np.ndarray,
    i: int,
    lower: np.ndarray,
    point: np.ndarray | None,
    exact: np.ndarray,
    pgap: np.ndarray,
    lazy: bool,
    nonneg: bool,
    d_min_only: bool,
    out: np.ndarray,
    problems: dict | None = None,
    screen: _Screen | None = None,
    defer: Callable[[np.ndarray], None] | None = None,
) -> tuple[float, int, np.ndarray | None, float, int]:
    """Margins of one row (written into ``out``); returns (d_min, j*, flip point, gap, #QPs).
    ``lazy``: ``lower`` holds closed forms only (``point`` None); steps 1-2 run for the visited
    pairs only. ``problems``: the caller's cache of pair QPs
    (:func:`guard.geometry.qp.pair_margin`). ``screen``: feasibility checks try the classes
    with the smallest closed forms first (:class:`_Screen`); with ``defer``, a point that passes
    them counts as feasible and is handed to ``defer`` for the caller to check against all of
    W."""
    order = np.argsort(np.where(np.isnan(lower), np.inf, lower), kind="stable")
    keeps_top: Callable[[np.ndarray], bool] | None = None
    if screen is not None:
        rivals = order[order != i][:_RIVALS]

        def keeps_top(y: np.ndarray) -> bool:
            if defer is None:
                return screen.keeps_top(y, W, b, i, rivals)
            if not screen.rivals_ok(y, W, b, i, rivals):
                return False
            defer(y)
            return True

    best, best_j, best_pt, gap, n_qp = np.inf, -1, None, 0.0, 0
    points: dict[int, np.ndarray] | np.ndarray = {} if point is None else point
    for j in map(int, order):
        if j == i:
            continue
        if d_min_only and lower[j] >= best:
            break  # every remaining lower bound is already >= the best exact margin
        if lazy and not exact[j] and np.isfinite(lower[j]):  # step 1's foot point, this pair
            _, y0, ok = _foot_point(x, W, b, i, j, nonneg, keeps_top)
            if ok:
                exact[j], points[j] = True, y0
        refine = lazy and nonneg
        if refine and not exact[j] and np.isfinite(lower[j]):  # step 2 for this pair only
            a, c = W[i] - W[j], b[j] - b[i]
            y, _, low = project_hyperplane_orthant(x[None], a[None], np.array([c]))
            if not np.isfinite(low[0]):
                exact[j], lower[j] = True, np.inf
            else:
                lower[j] = max(float(low[0]), float(lower[j]))
                if d_min_only and lower[j] >= best:
                    continue
                if (
                    keeps_top(y[0])
                    if keeps_top is not None
                    else _satisfies_eq8(y[0], W, b, np.array(i))
                ):
                    exact[j], points[j] = True, y[0]
                    lower[j] = max(float(np.linalg.norm(y[0] - x)), float(lower[j]))
                    pgap[j] = max(float(np.linalg.norm(y[0] - x)) - float(low[0]), 0.0)
        if exact[j]:
            d = float(lower[j])
            pt = points.get(j) if isinstance(points, dict) else points[j]
            gap = max(gap, float(pgap[j]))
        else:
            d, pt, g = pair_margin(x, W, b, i, j, nonneg, problems)
            n_qp += 1
            gap = max(gap, g)
            # The exact value is never below a lower bound; solver rounding may put it a hair
            # (~1e-15) under, so clamp.
            d = max(d, float(lower[j]))
        out[j] = d
        if d < best:
            best, best_j, best_pt = d, j, pt
    return best, best_j, best_pt, gap, n_qp


def lipschitz_constant(W: np.ndarray) -> float:
    """Largest singular value of W: ``||z(x) - z(y)|| <= sigma_max ||x - y||`` (eq. 14)."""
    return float(np.linalg.norm(np.asarray(W, dtype=np.float64), ord=2))
