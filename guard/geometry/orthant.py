"""Exact projection onto ``{y >= 0, a.y = c}`` for many problems at once (vectorised).

KKT: ``y(mu) = max(x - mu a, 0)`` and ``g(mu) = a.y(mu) - c`` is continuous, piecewise linear and
non-increasing in ``mu`` (its slope is ``-sum of a_k^2`` over the positive entries), so the root
lies on one segment between the sorted breakpoints ``x_k / a_k``, where ``g`` is linear and the
root has a closed form. This is the margin QP of eq. 9-10 without the other class constraints
(eq. 8): a lower bound of the margin that is exact whenever its solution also satisfies eq. 8.
"""

from __future__ import annotations

import numpy as np


def project_hyperplane_orthant(
    X: np.ndarray, A: np.ndarray, c: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Solve ``min ||y - x||  s.t.  a.y = c, y >= 0`` for every row.

    Args:
        X: (P, f) points; A: (P, f) hyperplane normals; c: (P,) offsets (all float64).

    Returns:
        y: (P, f) projections (NaN rows where the set is empty);
        mu: (P,) multipliers of the hyperplane;
        lower: (P,) dual lower bound of the distance (``sqrt(2 theta(mu))``), a certificate.
    """
    P, f = X.shape
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(A != 0, X / A, np.inf)  # breakpoints; a_k = 0 never changes activity
    order = np.argsort(t, axis=1, kind="stable")
    ts = np.take_along_axis(t, order, 1)
    As = np.take_along_axis(A, order, 1)
    Xs = np.take_along_axis(X, order, 1)
    ax, aa = As * Xs, As * As
    pos, neg = As > 0, As < 0
    zero = np.zeros((P, 1))

    def cum(v: np.ndarray) -> np.ndarray:  # sums over sorted index < m, for m = 0..f
        return np.concatenate([zero, np.cumsum(v, axis=1)], axis=1)

    cpa, cpq = cum(np.where(pos, ax, 0.0)), cum(np.where(pos, aa, 0.0))
    cna, cnq = cum(np.where(neg, ax, 0.0)), cum(np.where(neg, aa, 0.0))
    # On segment m (mu between breakpoints m-1 and m): a_k > 0 entries are positive when their
    # breakpoint is above mu (sorted index >= m), a_k < 0 entries when it is below (index < m).
    s1 = cpa[:, -1:] - cpa + cna  # sum of a_k x_k over positive entries
    s2 = cpq[:, -1:] - cpq + cnq  # sum of a_k^2 over positive entries
    lo = np.concatenate([np.full((P, 1), -np.inf), ts], axis=1)
    hi = np.concatenate([ts, np.full((P, 1), np.inf)], axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        mu_seg = (s1 - c[:, None]) / s2
        # tolerance: rounding may put the root a hair outside its segment
        width = 1e-12 * (1.0 + np.abs(mu_seg))
        ok = (s2 > 0) & (mu_seg >= lo - width) & (mu_seg <= hi + width)
    found = ok.any(axis=1)
    m = np.argmax(ok, axis=1)
    mu = np.where(found, mu_seg[np.arange(P), m], np.nan)
    y = np.maximum(X - mu[:, None] * A, 0.0)
    # dual function theta(mu) = min_{y >= 0} 1/2 ||y - x||^2 + mu (a.y - c), attained at y(mu)
    d = y - X
    theta = 0.5 * np.einsum("pf,pf->p", d, d) + mu * (np.einsum("pf,pf->p", A, y) - c)
    lower = np.sqrt(np.maximum(2.0 * theta, 0.0))
    y[~found] = np.nan
    lower[~found] = np.inf  # empty set: the constraint a.y = c has no nonnegative solution
    return y, mu, lower
