"""The method of multipliers of one start (:mod:`.solver`): the augmented Lagrangian minimised
with L-BFGS-B over the box, a Gauss-Newton polish onto the constraint, and the ReLU homotopy
for starts stuck where units are dead."""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
from scipy.optimize import minimize

from .problem import Problem

__all__ = ["homotopy", "multipliers", "polish"]

log = logging.getLogger(__name__)

#: The penalty weight grows at most to this multiple of ``rho0``; once it is past
#: ``_RHO_STALL * rho0`` and four multiplier updates in a row improved the violation by less
#: than 1%, the start stops as stalled.
_RHO_MAX = 1e8
_RHO_STALL = 1e4


def multipliers(
    p: Problem, x: np.ndarray, stop: float, max_outer: int | None = None
) -> tuple[np.ndarray, int, str]:
    """The method of multipliers from ``x`` (at most ``max_outer`` updates, default the
    config's); returns the last iterate when it meets ``stop``, else the closest iterate that
    did, else the one with the smallest violation (never worse than the start)."""
    max_outer = p.cfg.max_outer if max_outer is None else max_outer
    lo, hi = p.cfg.bounds
    bounds = [(lo, hi)] * x.size
    mu = _multiplier_estimate(p, x)
    rho = p.cfg.rho0
    prev_viol, prev_dist = np.inf, np.inf
    best = best_before = np.inf
    stalled = 0
    feasible: tuple[float, np.ndarray] | None = None  # the closest iterate that met ``stop``
    h = p.constraint(x)
    least = (p.violation(h), x)  # the iterate with the smallest violation (the start, first)
    if p.violation(h) <= stop:
        feasible = (float(np.linalg.norm(x - p.xr)), x)
        # From a feasible start the penalty must outweigh the whole distance to gain before
        # the iterate can leave the constraint by 100 x ``stop``: else the first minimisation
        # may trade the constraint for distance and land where the features no longer respond
        # (dead ReLUs: zero gradient), and never come back.
        rho = max(rho, float(np.sum((x - p.xr) ** 2)) / (100.0 * stop) ** 2)
    for k in range(1, max_outer + 1):
        res = minimize(
            p.lagrangian,
            x,
            args=(mu, rho),
            jac=True,
            method="L-BFGS-B",
            bounds=bounds,
            callback=lambda xk: setattr(p, "current", np.clip(xk, lo, hi)),
            options={"maxiter": p.cfg.max_inner, "maxcor": 20, "ftol": 1e-13, "gtol": 1e-7},
        )
        x = np.clip(res.x, lo, hi)
        p.current = x
        h = p.constraint(x)
        viol = p.violation(h)
        dist = float(np.linalg.norm(x - p.xr))
        log.debug(
            "outer %d: rho %.3g, violation %.3g, distance %.5g, evaluations %d (%s)",
            k,
            rho,
            viol,
            dist,
            p.evaluations,
            res.message,
        )
        if viol <= stop and (feasible is None or dist < feasible[0]):
            feasible = (dist, x)
        if viol < least[0]:
            least = (viol, x)
        if viol <= stop and abs(dist - prev_dist) <= 1e-4 * max(dist, 1e-12):
            return x, k, "converged"
        best = min(best, viol)
        stalled = stalled + 1 if viol > 0.99 * best_before else 0
        best_before = best
        if stalled >= 4 and rho >= _RHO_STALL * p.cfg.rho0:
            if feasible is not None:
                return feasible[1], k, "stalled; the closest iterate that met the constraint"
            return least[1], k, "stalled (the target may be out of reach)"
        mu = mu + rho * h
        mu = np.where(p.ineq, np.maximum(mu, 0.0), mu)
        if viol > 0.25 * prev_viol:
            rho = min(10.0 * rho, _RHO_MAX * p.cfg.rho0)
        prev_viol, prev_dist = viol, dist
    if feasible is not None and p.violation(p.constraint(x)) > stop:
        return feasible[1], max_outer, "iteration limit; the closest iterate that met it"
    return least[1], max_outer, "iteration limit"


def _multiplier_estimate(p: Problem, x: np.ndarray) -> np.ndarray:
    """Least-squares multipliers at ``x``: ``argmin ||(x - x_r) + J^T mu||`` over the
    equalities and the active inequalities (those >= 0), so the first minimisation already
    balances distance and constraint and does not wander far from a feasible start."""
    h, J = p.jacobian(x)
    # inequalities that are not active get no multiplier
    use = ~p.ineq | (h > -1e-9)
    mu = np.zeros(len(h))
    if use.any():
        Ju = J[use]
        mu[use] = np.linalg.lstsq(Ju @ Ju.T, -Ju @ (x - p.xr), rcond=1e-10)[0]
    return np.where(p.ineq, np.maximum(mu, 0.0), mu)


def homotopy(
    p: Problem,
    x0: np.ndarray,
    stop: float,
    relax: Callable[[float], None],
    plain: tuple[np.ndarray, int, str],
) -> tuple[np.ndarray, int, str]:
    """Solve again through leaky ReLUs of decreasing slope (from the start ``x0``'s result),
    then on the model itself; keep whichever of this and ``plain`` is better."""
    x, outer = x0, 0
    for a in p.cfg.slopes:
        relax(a)
        x, k, _ = multipliers(p, x, stop, p.cfg.homotopy_outer)
        outer += k
    relax(0.0)
    x, k, stopped = multipliers(p, x, stop)
    x = polish(p, x, stop)
    v_new, v_old = p.violation(p.constraint(x)), p.violation(p.constraint(plain[0]))
    d_new, d_old = (float(np.linalg.norm(v - p.xr)) for v in (x, plain[0]))
    better = v_new < v_old if max(v_new, v_old) > stop else d_new < d_old
    if better:
        return x, outer + k, f"ReLU homotopy, then {stopped}"
    return plain


def _gauss_newton_step(J: np.ndarray, r: np.ndarray, free: np.ndarray) -> np.ndarray:
    """Minimum-norm step ``dx`` on the ``free`` pixels with ``J dx = -r``."""
    Jf = J[:, free]
    y = np.linalg.lstsq(Jf @ Jf.T, r, rcond=1e-12)[0]
    dx = np.zeros(J.shape[1])
    dx[free] = -(Jf.T @ y)
    return dx


def polish(p: Problem, x: np.ndarray, stop: float) -> np.ndarray:
    """Gauss-Newton projection onto the constraint set, inside the box (fewest pixel changes)."""
    lo, hi = p.cfg.bounds
    h = p.constraint(x)
    viol = p.violation(h)
    for _ in range(p.cfg.polish_steps):
        if viol <= stop:
            break
        h, J = p.jacobian(x)
        # violated (or nearly active) inequalities are aimed a little inside, so that rounding
        # keeps them met; the others are left out of the step
        rows = ~p.ineq | (h > -0.5 * stop)
        if not rows.any():
            break
        J, r = J[rows], np.where(p.ineq, h + 0.5 * stop, h)[rows]
        interior = (x > lo) & (x < hi)
        dx = _gauss_newton_step(J, r, np.ones_like(interior))
        # pixels on the box that the step would push outwards are held where they are
        inward = ((x <= lo) & (dx > 0)) | ((x >= hi) & (dx < 0))
        dx = _gauss_newton_step(J, r, interior | inward)
        step, improved = 1.0, False
        while step >= 1.0 / 64:
            xn = np.clip(x + step * dx, lo, hi)
            hn = p.constraint(xn)
            vn = p.violation(hn)
            if vn < viol:
                x, h, viol, improved = xn, hn, vn, True
                break
            step /= 2
        if not improved:
            break
    return x
