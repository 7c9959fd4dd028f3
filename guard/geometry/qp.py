"""The margin QP of one class pair (eq. 9 s.t. 7, 8, 10), solved exactly with a certificate.

Primary solver: DAQP (Arnström et al. 2022), a dual active-set method in C that terminates
finitely with the exact active set; bounds ``y >= 0`` are handled as simple bounds. Fallback
(should DAQP not report optimality, and to confirm infeasibility): Lawson-Hanson NNLS on the
least-distance form (see :func:`ldp`). Both return Lagrange multipliers, from which a dual lower
bound is computed here independently of the solver: ``certificate gap = primal - dual``.

Also the minimum-norm point of a convex hull (the hull distance's inner QP, eq. 21-22):
:func:`min_norm_point` (NNLS) and :func:`min_norm_point_warm` (DAQP on its dual, warm-started).
All of the project's small exact QPs live here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import daqp
import numpy as np
from scipy.optimize import nnls

_INF = 1e30
_EQ = 5  # DAQP sense flag: equality constraint (bits: active | immutable)
_EYE: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # identity / zero vector per dimension


def ldp(G: np.ndarray, h: np.ndarray) -> tuple[np.ndarray, float] | None:
    """Least-distance program ``min ||u|| s.t. G u >= h`` via NNLS (Lawson & Hanson, ch. 23).

    Returns ``(u, lower)`` with ``lower`` a dual lower bound of ``||u*||``; ``None`` when the
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


def _class_rows(W: np.ndarray, b: np.ndarray, i: int, j: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows ``a_k . y >= -c_k``: first the i|j boundary (an equality), then i >= k."""
    others = [k for k in range(W.shape[0]) if k != i and k != j]
    A = np.vstack([W[i] - W[j], W[i] - W[others]])
    c = np.concatenate([[b[i] - b[j]], b[i] - b[others]])
    return A, c


def pair_margin_nnls(x, W, b, i, j, nonneg):
    """Reference path: the LDP in ``u = y - x`` solved by NNLS. Returns (d, y, gap)."""
    A, c = _class_rows(W, b, i, j)
    s = A @ x + c
    G = [A[:1], -A[:1], A[1:]]
    h = [-s[:1], s[:1], -s[1:]]
    if nonneg:
        G.append(np.eye(len(x)))
        h.append(-x)
    out = ldp(np.vstack(G), np.concatenate(h))
    if out is None:
        return np.inf, None, 0.0
    u, lower = out
    d = float(np.linalg.norm(u))
    return d, x + u, max(d - lower, 0.0)


@dataclass(frozen=True, eq=False)
class PairProblem:
    """What the i|j margin QP needs besides the sample ``x``: its rows ``A`` (m, f) and offsets
    ``c`` (:func:`_class_rows`), DAQP's bounds and senses, and which upper bounds are finite.
    The same for every sample, so :func:`compute_margins <guard.geometry.margins.compute_margins>`
    builds it once per visited pair (building it costs several times DAQP's own solve)."""

    A: np.ndarray
    c: np.ndarray
    lower_b: np.ndarray
    upper_b: np.ndarray
    sense: np.ndarray
    finite_ub: np.ndarray
    eye: np.ndarray

    @classmethod
    def build(cls, W: np.ndarray, b: np.ndarray, i: int, j: int, nonneg: bool) -> PairProblem:
        f = W.shape[1]
        A, c = _class_rows(W, b, i, j)
        m = A.shape[0]
        if nonneg:
            lower_b = np.concatenate([np.zeros(f), -c])
            upper_b = np.concatenate([np.full(f, _INF), -c[:1], np.full(m - 1, _INF)])
            sense = np.zeros(f + m, dtype=np.int32)
            sense[f] = _EQ
        else:
            lower_b, upper_b = -c, np.concatenate([-c[:1], np.full(m - 1, _INF)])
            sense = np.zeros(m, dtype=np.int32)
            sense[0] = _EQ
        eye = (_EYE.get(f) or _EYE.setdefault(f, (np.eye(f), np.zeros(f))))[0]
        return cls(A, c, lower_b, upper_b, sense, upper_b < _INF, eye)


def pair_margin(x, W, b, i, j, nonneg, problems=None):
    """Exact i|j margin of ``x`` (float64 arrays). Returns ``(distance, flip point, gap)``;
    ``(inf, None, 0)`` when the boundary cannot be reached. ``problems``: a dict the caller
    keeps while W, b and nonneg stay the same, caching each pair's :class:`PairProblem`."""
    f = len(x)
    key = (i, j)
    pb = None if problems is None else problems.get(key)
    if pb is None:
        pb = PairProblem.build(W, b, i, j, nonneg)
        if problems is not None:
            problems[key] = pb
    A = pb.A
    y, _, flag, info = daqp.solve(
        pb.eye, -x, A, pb.upper_b, pb.lower_b, pb.sense, primal_tol=1e-10, dual_tol=1e-12
    )
    if flag != 1:  # not optimal (infeasible, or numerical trouble): the reference decides
        return pair_margin_nnls(x, W, b, i, j, nonneg)
    y = np.asarray(y)
    lam = np.asarray(info["lam"])
    # Dual bound from DAQP's multipliers (lam > 0: upper side active, < 0: lower side) for the
    # rows M = [I; A] (bounds, then classes): theta = -1/2 ||M^T lam||^2 + lam.(M x)
    # - sum(lam+ ub - lam- lb); a lower bound of ||y* - x||^2 / 2 for any such lam.
    lp = np.where(pb.finite_ub, np.maximum(lam, 0.0), 0.0)
    ln = np.maximum(-lam, 0.0)
    lam = lp - ln
    lb = np.where(ln > 0, pb.lower_b, 0.0)
    ub = np.where(lp > 0, pb.upper_b, 0.0)
    if nonneg:
        g = lam[:f] + A.T @ lam[f:]
        lam_mx = lam[:f] @ x + lam[f:] @ (A @ x)
    else:
        g = A.T @ lam
        lam_mx = lam @ (A @ x)
    theta = -0.5 * (g @ g) + lam_mx - (lp @ ub - ln @ lb)
    u = y - x
    d = math.sqrt(float(u @ u))
    return d, y, max(d - math.sqrt(max(2.0 * float(theta), 0.0)), 0.0)


def min_norm_point(P: np.ndarray) -> np.ndarray:
    """Convex weights of the point of ``conv(rows of P)`` closest to the origin.

    Solves ``min ||P^T a||`` over the simplex exactly with Lawson-Hanson NNLS: minimising
    ``||P^T v||^2 + (1^T v - 1)^2`` over ``v >= 0`` gives ``v = t a*`` with ``t > 0`` (substitute
    ``v = t a`` and minimise over t: the objective is increasing in ``||P^T a||``).

    Args:
        P: (m, d) points (already shifted so the query is the origin).

    Returns:
        a: (m,) weights, ``a >= 0``, ``sum(a) = 1``.
    """
    scale = float(np.sqrt((P * P).sum(axis=1).max())) or 1.0
    E = np.vstack([P.T / scale, np.ones((1, P.shape[0]))])
    rhs = np.zeros(E.shape[0])
    rhs[-1] = 1.0
    v, _ = nnls(E, rhs, maxiter=50 * E.shape[1])
    total = v.sum()
    if not total > 0:  # cannot happen for m >= 1 (v = e_0 / (1 + |P_0|^2) is better than 0)
        v = np.zeros(P.shape[0])
        v[np.argmin((P * P).sum(axis=1))] = 1.0
        total = 1.0
    return v / total


def min_norm_point_warm(
    P: np.ndarray, dual_start: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Like :func:`min_norm_point`, faster, warm-startable: the dual of the least-distance
    program ``min ||y|| s.t. P y >= 1`` (its solution is ``x* / ||x*||^2``, with multipliers
    proportional to the convex weights) solved by DAQP's dual active-set method.

    Args:
        P: (m, d) points shifted so the query is the origin.
        dual_start: multipliers of a previous solve (0 for new points) to warm-start from.

    Returns:
        (weights a (m,), multipliers (m,)); falls back to NNLS when the origin is in the hull
        (the program is then infeasible).
    """
    m, d = P.shape
    kwargs = {} if dual_start is None else {"dual_start": -dual_start}
    eye, zero = _EYE.get(d) or _EYE.setdefault(d, (np.eye(d), np.zeros(d)))
    _, _, flag, info = daqp.solve(
        eye,
        zero,
        P,
        np.full(m, 1e30),
        np.ones(m),
        np.zeros(m, dtype=np.int32),
        primal_tol=1e-12,
        dual_tol=1e-14,
        **kwargs,
    )
    lam = np.maximum(-np.asarray(info["lam"]), 0.0) if flag == 1 else None
    if lam is None or not lam.sum() > 0:
        a = min_norm_point(P)
        return a, a
    return lam / lam.sum(), lam
