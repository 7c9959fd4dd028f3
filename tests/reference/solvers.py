"""Independent reference solutions: a generic conic solver (Clarabel via cvxpy) at tight
tolerance, and brute force. Used only by the tests."""

from __future__ import annotations

import cvxpy as cp
import numpy as np

TIGHT = dict(
    solver="CLARABEL",
    tol_gap_abs=1e-10,
    tol_gap_rel=1e-10,
    tol_feas=1e-10,
    tol_ktratio=1e-10,
    max_iter=500,
)


def margin(x: np.ndarray, W: np.ndarray, b: np.ndarray, i: int, j: int, nonneg: bool) -> float:
    """Distance from x to the i|j boundary subject to eq. 8 (and 10); inf if infeasible."""
    n, f = W.shape
    y = cp.Variable(f)
    others = [k for k in range(n) if k not in (i, j)]
    cons = [(W[i] - W[j]) @ y + (b[i] - b[j]) == 0]
    if others:
        cons.append((W[i] - W[others]) @ y + (b[i] - b[others]) >= 0)
    if nonneg:
        cons.append(y >= 0)
    prob = cp.Problem(cp.Minimize(cp.sum_squares(y - x)), cons)
    prob.solve(**TIGHT)
    if prob.status in ("infeasible", "infeasible_inaccurate"):
        return np.inf
    assert prob.status == "optimal", prob.status
    return float(np.linalg.norm(y.value - x))


def hull_distance(T: np.ndarray, q: np.ndarray) -> float:
    """Distance from q to conv(rows of T): the full QP on the alpha-formulation (eq. 20-23)."""
    T = np.asarray(T, dtype=np.float64)
    a = cp.Variable(T.shape[0], nonneg=True)
    prob = cp.Problem(cp.Minimize(cp.sum_squares(T.T @ a - q)), [cp.sum(a) == 1])
    prob.solve(**TIGHT)
    assert prob.status == "optimal", prob.status
    alpha = np.maximum(a.value, 0)
    alpha /= alpha.sum()
    return float(np.linalg.norm(T.T @ alpha - q))


def in_hull(T: np.ndarray, q: np.ndarray) -> bool:
    """Exact membership of q in conv(rows of T) by an LP feasibility problem (HiGHS)."""
    from scipy.optimize import linprog

    T = np.asarray(T, dtype=np.float64)
    A_eq = np.vstack([T.T, np.ones((1, T.shape[0]))])
    b_eq = np.concatenate([q, [1.0]])
    res = linprog(np.zeros(T.shape[0]), A_eq=A_eq, b_eq=b_eq, bounds=(0, None), method="highs")
    return res.status == 0
