"""Exact distance from a feature vector to every decision boundary of an affine classifier.

Implements eq. 7-12 of the paper. For a feature vector ``x`` predicted as class ``i`` and any
other class ``j``, the margin is the distance from ``x`` to the nearest point ``y`` with

    (w_i - w_j) . y + b_i - b_j = 0                  (eq. 7, on the i|j boundary)
    (w_i - w_k) . y + b_i - b_k >= 0   for all k     (eq. 8, i and j still on top)
    y >= 0                              if the feature space is nonnegative (eq. 10)

Two steps per pair:

1. The closed form ``|(w_i-w_j).x + b_i-b_j| / ||w_i-w_j||`` (distance to the hyperplane) is a
   lower bound. When its foot point satisfies the other constraints it *is* the answer.
2. Otherwise the convex QP is solved exactly by an active-set method: the projection onto the
   polyhedron is a least-distance program (LDP), which Lawson & Hanson (1974, ch. 23) reduce to one
   non-negative least-squares problem; ``scipy.optimize.nnls`` solves it with their finite
   active-set algorithm. The NNLS solution also yields Lagrange multipliers, so each exact margin
   comes with a certificate: a dual-feasible point whose dual objective is a lower bound. The
   reported ``certificate_gap`` is ``primal distance - dual lower bound`` (≈1e-12 when exact).

A boundary that cannot be reached (e.g. class j never borders class i inside x >= 0) gets ``inf``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import nnls

from .errors import InputError
from .progress import progress_bar

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


def _ldp(G: np.ndarray, h: np.ndarray) -> tuple[np.ndarray, float] | None:
    """Least-distance program ``min ||u|| s.t. G u >= h`` via NNLS (Lawson & Hanson, ch. 23).

    Returns ``(u, lower)`` where ``lower`` is a dual lower bound on ``||u*||``; ``None`` when the
    constraints are infeasible.
    """
    E = np.vstack([G.T, h[None, :]])
    rhs = np.zeros(E.shape[0])
    rhs[-1] = 1.0
    v, _ = nnls(E, rhs, maxiter=50 * E.shape[1])
    r = E @ v - rhs
    s = -r[-1]  # = 1 - h.v, > 0 iff the program is feasible
    if s <= 1e-12:
        return None
    lam = v / s  # Lagrange multipliers of G u >= h, all >= 0
    u = G.T @ lam
    dual = lam @ h - 0.5 * (u @ u)  # dual objective: lower bound of ||u*||^2 / 2
    return u, float(np.sqrt(max(2.0 * dual, 0.0)))


def _pair_constraints(
    x: np.ndarray, W: np.ndarray, b: np.ndarray, i: int, j: int, nonneg: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Constraints of the i|j QP written for the step ``u = y - x`` as ``G u >= h``."""
    n, f = W.shape
    others = np.array([k for k in range(n) if k != i and k != j], dtype=np.int64)
    a = W[i] - W[j]
    s = a @ x + (b[i] - b[j])
    rows = [a[None, :], -a[None, :], W[i] - W[others]]
    rhs = [np.array([-s]), np.array([s]), -((W[i] - W[others]) @ x + b[i] - b[others])]
    if nonneg:
        rows.append(np.eye(f))
        rhs.append(-x)
    return np.vstack(rows), np.concatenate(rhs)


def exact_pair_margin(
    x: np.ndarray, W: np.ndarray, b: np.ndarray, i: int, j: int, nonneg: bool
) -> tuple[float, np.ndarray | None, float]:
    """Exact i|j margin of one feature vector by the active-set QP.

    Returns ``(distance, flip_point, certificate_gap)``; ``(inf, None, 0)`` if unreachable.
    """
    G, h = _pair_constraints(x, W, b, i, j, nonneg)
    out = _ldp(G, h)
    if out is None:
        return np.inf, None, 0.0
    u, lower = out
    dist = float(np.linalg.norm(u))
    return dist, x + u, max(dist - lower, 0.0)


def closed_form_margins(
    X: np.ndarray, W: np.ndarray, b: np.ndarray, pred: np.ndarray, nonneg: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Hyperplane distances, their foot points and whether each foot point is feasible.

    Args:
        X: (N, f) float64 features. W: (n, f). b: (n,). pred: (N,) predicted classes.

    Returns:
        dist (N, n) with NaN at pred, foot (N, n, f), feasible (N, n) bool.
    """
    N, n = X.shape[0], W.shape[0]
    A = W[pred][:, None, :] - W[None, :, :]  # (N, n, f): w_i - w_j
    c = b[pred][:, None] - b[None, :]  # (N, n)
    s = np.einsum("nkf,nf->nk", A, X) + c  # >= 0 since i = argmax
    norm2 = np.einsum("nkf,nkf->nk", A, A)
    rows = np.arange(N)
    with np.errstate(divide="ignore", invalid="ignore"):
        dist = np.where(norm2 > 0, s / np.sqrt(norm2), np.where(s == 0, 0.0, np.inf))
        step = np.where(norm2 > 0, s / norm2, 0.0)
    dist[rows, pred] = np.nan
    foot = X[:, None, :] - step[..., None] * A
    # Feasibility of every foot point: pred must still (weakly) beat every class there.
    z = np.einsum("nkf,cf->nkc", foot, W) + b  # (N, n, n) logits at the foot points
    zi = np.take_along_axis(z, pred[:, None, None], axis=2)
    scale = 1.0 + np.abs(z).max(axis=2, keepdims=True)
    ok = (zi - z >= -_FEAS_TOL * scale).all(axis=2)
    if nonneg:
        fscale = 1.0 + np.abs(X).max(axis=1)[:, None, None]
        ok &= (foot >= -_FEAS_TOL * fscale).all(axis=2)
    ok &= np.isfinite(dist)
    ok[rows, pred] = False
    return dist, foot, ok


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
        raise InputError(
            f"expected features (N, {W.shape[1] if W.ndim == 2 else 'f'}), W (n, f), b (n,); "
            f"got X {X.shape}, W {W.shape}, b {b.shape}"
        )
    if W.shape[0] < 2:
        raise InputError(f"a classifier needs at least 2 classes, W has {W.shape[0]} rows")
    if not np.all(np.isfinite(X)):
        raise InputError("features contain NaN or Inf")
    N, f = X.shape
    n = W.shape[0]
    pred = np.argmax(X @ W.T + b, axis=1)
    margins = np.full((N, n), np.nan)
    closed = np.full((N, n), np.nan)
    d_min = np.full(N, np.inf)
    nearest = np.full(N, -1, dtype=np.int64)
    flip = np.full((N, f), np.nan)
    gap = np.zeros(N)
    n_qp = np.zeros(N, dtype=np.int64)
    chunk = max(1, chunk_bytes // (8 * n * (f + n)))
    with progress_bar(N, "margins", enabled=progress) as bar:
        for lo in range(0, N, chunk):
            sl = slice(lo, min(lo + chunk, N))
            dist, foot, ok = closed_form_margins(X[sl], W, b, pred[sl], nonneg)
            closed[sl] = dist
            for r in range(dist.shape[0]):
                row = lo + r
                d_min[row], nearest[row], pt, gap[row], n_qp[row] = _row_margins(
                    X[row], W, b, int(pred[row]), dist[r], foot[r], ok[r], nonneg, d_min_only,
                    margins[row],
                )
                if pt is not None:
                    flip[row] = pt
                bar.update(1)
    return Margins(pred, margins, closed, d_min, nearest, flip, gap, n_qp)


def _row_margins(
    x: np.ndarray,
    W: np.ndarray,
    b: np.ndarray,
    i: int,
    dist: np.ndarray,
    foot: np.ndarray,
    ok: np.ndarray,
    nonneg: bool,
    d_min_only: bool,
    out: np.ndarray,
) -> tuple[float, int, np.ndarray | None, float, int]:
    """Margins of one row (written into ``out``); returns (d_min, j*, flip point, gap, #QPs)."""
    order = np.argsort(np.where(np.isnan(dist), np.inf, dist), kind="stable")
    best, best_j, best_pt, gap, n_qp = np.inf, -1, None, 0.0, 0
    for j in map(int, order):
        if j == i:
            continue
        if d_min_only and dist[j] >= best:
            break  # every remaining lower bound is already >= the best exact margin
        if ok[j]:
            d, pt = float(dist[j]), foot[j]
        else:
            d, pt, g = exact_pair_margin(x, W, b, i, j, nonneg)
            n_qp += 1
            gap = max(gap, g)
            # The exact value is never below the closed-form lower bound; solver rounding may
            # put it a hair (~1e-15) under, so clamp.
            d = max(d, float(dist[j]))
        out[j] = d
        if d < best:
            best, best_j, best_pt = d, j, pt
    return best, best_j, best_pt, gap, n_qp


def lipschitz_constant(W: np.ndarray) -> float:
    """Largest singular value of W: ``||z(x) - z(y)|| <= sigma_max ||x - y||`` (eq. 14)."""
    return float(np.linalg.norm(np.asarray(W, dtype=np.float64), ord=2))
