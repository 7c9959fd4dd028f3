"""Pre-images: the input closest to a reference whose features reach a target (paper eq. 15-18).

    min_x  1/2 ||x - x_r||^2   s.t.  x in [lo, hi]^P  and   h(N_phi(x)) = 0   (eq. 17-18)
                                                      or   h(N_phi(x)) <= 0  (eq. 15-16)

with ``h`` from :mod:`.targets` (a point, a ball, a ball's perimeter). ``N_phi`` is a
differentiable feature map (a torch function), so the problem is non-convex. Each start runs the
method of multipliers (the augmented Lagrangian of Powell-Hestenes-Rockafellar): minimise

    L(x) = 1/2 ||x - x_r||^2 + sum_eq  mu.h + rho/2 h^2
                             + sum_ineq (max(0, mu + rho h)^2 - mu^2) / (2 rho)

over the box with L-BFGS-B (the box handled exactly by its projections; gradients by autograd),
update ``mu`` and raise ``rho`` tenfold whenever the violation did not fall to a quarter. A
Gauss-Newton projection onto the constraint (minimum-norm steps on the free pixels, clipped to
the box) then polishes the violation when the multipliers have not closed it. Several starts
(the paper stresses global optimisation) are solved and the best kept: the closest to ``x_r``
among those that meet the constraint, else the one that comes closest to it.

Every solve reports, on the features of the float32 image it returns (computed by ``check``,
e.g. the deployed onnxruntime model, or the feature map itself): the feature residual
(distance to the target set), the same for the reference (``start_residual``), the pixel
distance to ``x_r`` and ``met``: residual <= ``rtol * start_residual + atol``. A solve that does
not meet it says so (``met`` False and ``message``); it never fails silently.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import minimize

from ..errors import InputError
from .targets import BallTarget, Target

__all__ = ["FeatureMap", "Inversion", "SolverConfig", "StartResult", "invert", "segment_crossing"]

#: A differentiable feature map: inputs (B, *input shape) -> features (B, f).
FeatureMap = Callable[[torch.Tensor], torch.Tensor]
#: The features a result is judged on: numpy inputs (B, *input shape) -> (B, f).
FeatureCheck = Callable[[np.ndarray], np.ndarray]

_DTYPES = {"float32": torch.float32, "float64": torch.float64}

log = logging.getLogger(__name__)

#: The penalty weight grows at most to this multiple of ``rho0``; once it is past
#: ``_RHO_STALL * rho0`` and four multiplier updates in a row improved the violation by less
#: than 1%, the start stops as stalled.
_RHO_MAX = 1e8
_RHO_STALL = 1e4


@dataclass(frozen=True)
class SolverConfig:
    """Settings of :func:`invert`.

    Attributes:
        rtol, atol: a solve meets its constraint when the feature residual is at most
            ``rtol * start_residual + atol`` (``start_residual``: the reference's residual).
        bounds: the input domain ``[lo, hi]`` of every pixel (the model's input range).
        max_outer: multiplier updates per start. max_inner: L-BFGS-B iterations per update.
        rho0: first penalty weight.
        polish_steps: Gauss-Newton projection steps after the multiplier method.
        max_seconds: wall-clock budget of one solve, all starts together (``None``: none).
        dtype: the dtype the feature map is fed (``float32`` or ``float64``).
        slopes: the ReLU homotopy: when a start does not reach the constraint on the model,
            it is solved again through the model with leaky ReLUs of these negative slopes in
            turn (dead units keep a gradient), then on the model itself from there (needs a
            ``relax`` function, e.g. :meth:`TorchTwin.set_relu_slope`); ``homotopy_outer``
            multiplier updates per slope.
    """

    rtol: float = 1e-3
    atol: float = 1e-5
    bounds: tuple[float, float] = (0.0, 1.0)
    max_outer: int = 30
    max_inner: int = 200
    rho0: float = 10.0
    polish_steps: int = 20
    max_seconds: float | None = None
    dtype: str = "float32"
    slopes: tuple[float, ...] = (0.3, 0.1, 0.03)
    homotopy_outer: int = 8

    def __post_init__(self) -> None:
        lo, hi = self.bounds
        if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
            raise InputError(f"expected bounds lo < hi, got {self.bounds}")
        if not (self.rtol >= 0 and self.atol >= 0 and self.rtol + self.atol > 0):
            raise InputError(f"expected rtol, atol >= 0, not both 0: {self.rtol}, {self.atol}")
        if self.dtype not in _DTYPES:
            raise InputError(f"expected dtype float32 or float64, got {self.dtype!r}")
        if self.max_seconds is not None and not self.max_seconds > 0:
            raise InputError(f"expected max_seconds > 0 or None, got {self.max_seconds}")


@dataclass(frozen=True)
class StartResult:
    """One start of a solve: its feature residual and pixel distance (on ``check``'s
    features), whether it met the tolerance, model evaluations, multiplier updates and why it
    stopped."""

    feature_residual: float
    pixel_distance: float
    met: bool
    evaluations: int
    outer_iterations: int
    stopped: str


@dataclass(frozen=True)
class Inversion:
    """The result of one solve (eq. 15-18).

    Attributes:
        image: the pre-image, float32, the reference's shape, inside ``bounds``.
        features: (f,) float64 its features (as ``check`` computes them).
        feature_residual: distance of ``features`` to the target set.
        start_residual: the same for the reference image.
        pixel_distance: ``||image - reference||_2``.
        tolerance: ``rtol * start_residual + atol``; met: ``feature_residual <= tolerance``.
        start: index of the start the image came from; starts: every start's outcome.
        seconds: wall time of the solve; message: one line saying what was reached.
    """

    image: np.ndarray
    features: np.ndarray
    feature_residual: float
    start_residual: float
    pixel_distance: float
    tolerance: float
    met: bool
    start: int
    starts: tuple[StartResult, ...]
    seconds: float
    message: str


class _OutOfTime(Exception):
    pass


@dataclass
class _Problem:
    """One start's problem: the feature map, the target, the reference and the box."""

    fmap: FeatureMap
    target: Target
    xr: np.ndarray  # (P,) float64
    shape: tuple[int, ...]
    cfg: SolverConfig
    deadline: float
    evaluations: int = 0
    #: the latest accepted iterate (what a start returns when its time runs out)
    current: np.ndarray | None = None

    @property
    def dtype(self) -> torch.dtype:
        return _DTYPES[self.cfg.dtype]

    def _tensor(self, x: np.ndarray, rows: int = 1) -> torch.Tensor:
        t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64).reshape(1, *self.shape))
        return t.to(self.dtype).repeat(rows, *([1] * len(self.shape)))

    def _h(self, xt: torch.Tensor) -> torch.Tensor:
        phi = self.fmap(xt)
        if phi.ndim != 2 or phi.shape[1] != self.target.dim:
            raise InputError(
                f"the feature map gives shape {tuple(phi.shape)}, the target has "
                f"{self.target.dim} features"
            )
        return self.target.values(phi.to(torch.float64))

    def tick(self) -> None:
        self.evaluations += 1
        if time.monotonic() > self.deadline:
            raise _OutOfTime

    def constraint(self, x: np.ndarray) -> np.ndarray:
        """``h(N(x))`` (m,)."""
        self.tick()
        with torch.no_grad():
            return self._h(self._tensor(x))[0].numpy()

    def violation(self, h: np.ndarray) -> float:
        """Norm of the violated part of ``h``: equalities, and inequalities above 0."""
        return float(np.linalg.norm(np.where(self.ineq, np.maximum(h, 0.0), h)))

    @property
    def ineq(self) -> np.ndarray:
        return self.target.inequalities

    def lagrangian(self, x: np.ndarray, mu: np.ndarray, rho: float) -> tuple[float, np.ndarray]:
        """Augmented Lagrangian and its gradient at ``x`` (P,)."""
        self.tick()
        xt = self._tensor(x).requires_grad_(True)
        h = self._h(xt)[0]
        mu_t = torch.from_numpy(mu)
        ineq = torch.from_numpy(self.ineq)
        s = torch.clamp(mu_t + rho * h, min=0.0)
        pen_ineq = (s * s - mu_t * mu_t) / (2.0 * rho)
        pen_eq = mu_t * h + 0.5 * rho * h * h
        pen = torch.where(ineq, pen_ineq, pen_eq).sum()
        (gx,) = torch.autograd.grad(pen, xt)
        d = x - self.xr
        grad = d + gx.to(torch.float64).reshape(-1).numpy()
        return 0.5 * float(d @ d) + float(pen.item()), grad

    def jacobian(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``h(N(x))`` (m,) and its Jacobian (m, P): one batched backward pass."""
        self.tick()
        m = self.target.n_constraints
        xt = self._tensor(x, rows=m).requires_grad_(True)
        h = self._h(xt)  # (m, m): row i is the constraint vector of copy i
        (gx,) = torch.autograd.grad(torch.diagonal(h).sum(), xt)
        return h[0].detach().numpy(), gx.to(torch.float64).reshape(m, -1).numpy()


def _multipliers(
    p: _Problem, x: np.ndarray, stop: float, max_outer: int | None = None
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


def _multiplier_estimate(p: _Problem, x: np.ndarray) -> np.ndarray:
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


def segment_crossing(
    fmap: FeatureMap, target: BallTarget, inside: np.ndarray, outside: np.ndarray, steps: int = 40
) -> np.ndarray | None:
    """A point of the straight segment from ``inside`` (features in the ball) to ``outside``
    (features outside) whose features lie on the ball's perimeter (bisection on the continuous
    residual; ``None`` when the ends are not on both sides). A feasible start for the
    perimeter, and for the ball when the reference lies outside it."""
    a = np.asarray(inside, dtype=np.float64)
    b = np.asarray(outside, dtype=np.float64)

    def signed(t: float) -> float:
        with torch.no_grad():
            xt = torch.from_numpy((a + t * (b - a))[None]).to(torch.float32)
            phi = fmap(xt).to(torch.float64).numpy()[0]
        return float(np.linalg.norm(phi - target.center) - target.radius)

    lo_t, hi_t = 0.0, 1.0
    if not (signed(lo_t) < 0 < signed(hi_t)):
        return None
    for _ in range(steps):
        mid = 0.5 * (lo_t + hi_t)
        if signed(mid) < 0:
            lo_t = mid
        else:
            hi_t = mid
    return a + hi_t * (b - a)


def _homotopy(
    p: _Problem,
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
        x, k, _ = _multipliers(p, x, stop, p.cfg.homotopy_outer)
        outer += k
    relax(0.0)
    x, k, stopped = _multipliers(p, x, stop)
    x = _polish(p, x, stop)
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


def _polish(p: _Problem, x: np.ndarray, stop: float) -> np.ndarray:
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


def _as_image(x: np.ndarray, shape: tuple[int, ...], bounds: tuple[float, float]) -> np.ndarray:
    """float32 image, every pixel inside the bounds after rounding to float32."""
    img = np.clip(x.reshape(shape), bounds[0], bounds[1]).astype(np.float32)
    return np.clip(img, np.float32(bounds[0]), np.float32(bounds[1]))


def invert(
    fmap: FeatureMap,
    target: Target,
    reference: np.ndarray,
    *,
    starts: Sequence[np.ndarray] | None = None,
    check: FeatureCheck | None = None,
    config: SolverConfig | None = None,
    relax: Callable[[float], None] | None = None,
) -> Inversion:
    """The image closest to ``reference`` whose features reach ``target`` (eq. 15-18).

    Args:
        fmap: differentiable feature map (torch), inputs of ``reference``'s shape with a
            leading batch axis.
        target: :class:`~.targets.PointTarget` or :class:`~.targets.BallTarget`.
        reference: the image ``x_r`` (any shape), inside ``config.bounds``.
        starts: starting images (default: the reference alone); each is solved, the best kept.
        check: features the result is judged on (default: ``fmap`` itself), e.g. the deployed
            model's.
        config: :class:`SolverConfig`.
        relax: sets the negative slope of ``fmap``'s ReLUs (0: the model); enables the
            homotopy of ``config.slopes``.

    Returns:
        :class:`Inversion` (``met`` says whether the constraint was reached; never raises for
        a constraint that was not).
    """
    cfg = config or SolverConfig()
    t0 = time.monotonic()
    deadline = t0 + (cfg.max_seconds if cfg.max_seconds is not None else np.inf)
    xr = np.asarray(reference, dtype=np.float64)
    lo, hi = cfg.bounds
    if xr.size == 0 or not np.all(np.isfinite(xr)):
        raise InputError(f"expected a finite reference image, got shape {xr.shape}")
    if xr.min() < lo or xr.max() > hi:
        raise InputError(
            f"the reference image has pixels in [{xr.min():g}, {xr.max():g}], outside the "
            f"domain [{lo:g}, {hi:g}]"
        )
    shape = xr.shape
    starts = [xr] if starts is None or len(starts) == 0 else list(starts)
    for i, s in enumerate(starts):
        if np.shape(s) != shape:
            raise InputError(f"start {i} has shape {np.shape(s)}, the reference {shape}")

    def features(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        if check is not None:
            return np.asarray(check(x), dtype=np.float64)
        with torch.no_grad():
            t = torch.from_numpy(np.ascontiguousarray(x)).to(_DTYPES[cfg.dtype])
            return fmap(t).to(torch.float64).numpy()

    ref_features = features(xr[None].astype(np.float32))
    if ref_features.shape != (1, target.dim):
        raise InputError(
            f"the feature map gives shape {ref_features.shape[1:]} per input, the target has "
            f"{target.dim} features"
        )
    start_residual = float(target.residual(ref_features[0]))
    tol = cfg.rtol * start_residual + cfg.atol
    prob = _Problem(fmap, target, xr.reshape(-1), shape, cfg, deadline)
    # The multiplier method stops below the tolerance, so the judged features (another
    # runtime's float32 rounding) still meet it.
    stop = 0.25 * tol
    images: list[np.ndarray] = []
    outcomes: list[tuple[np.ndarray, int, int, str]] = []
    for s in starts:
        if time.monotonic() > deadline and images:
            break
        evals0 = prob.evaluations
        x = np.clip(np.asarray(s, dtype=np.float64).reshape(-1), lo, hi)
        prob.current = x
        outer, stopped = 0, "time budget"
        try:
            x, outer, stopped = _multipliers(prob, x, stop)
            x = _polish(prob, x, stop)
            if relax is not None and prob.violation(prob.constraint(x)) > stop:
                x, outer, stopped = _homotopy(prob, x, stop, relax, (x, outer, stopped))
        except _OutOfTime:
            x = prob.current  # the last accepted iterate, judged like any other
        finally:
            if relax is not None:
                relax(0.0)
        img = _as_image(x, shape, cfg.bounds)
        images.append(img)
        outcomes.append((img, prob.evaluations - evals0, outer, stopped))
    imgs = np.stack(images)
    feats = features(imgs)
    resid = target.residual(feats)
    dists = np.linalg.norm((imgs.astype(np.float64) - xr[None]).reshape(len(imgs), -1), axis=1)
    met = resid <= tol
    results = tuple(
        StartResult(float(r), float(d), bool(m), ev, outer, stopped)
        for r, d, m, (_, ev, outer, stopped) in zip(resid, dists, met, outcomes)
    )
    best = int(np.argmin(np.where(met, dists, np.inf))) if met.any() else int(np.argmin(resid))
    skipped = len(starts) - len(images)
    verdict = "met" if met[best] else "NOT met"
    message = (
        f"{verdict}: feature residual {resid[best]:.3g} vs tolerance {tol:.3g} (rtol {cfg.rtol:g} "
        f"x start residual {start_residual:.4g} + atol {cfg.atol:g}); pixel distance "
        f"{dists[best]:.4g}; start {best + 1} of {len(images)} ({results[best].stopped})"
        + (f"; {skipped} start(s) skipped: time budget" if skipped else "")
    )
    return Inversion(
        image=imgs[best],
        features=feats[best],
        feature_residual=float(resid[best]),
        start_residual=start_residual,
        pixel_distance=float(dists[best]),
        tolerance=float(tol),
        met=bool(met[best]),
        start=best,
        starts=results,
        seconds=time.monotonic() - t0,
        message=message,
    )
