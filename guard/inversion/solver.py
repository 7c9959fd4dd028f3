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
the box) then polishes the violation when the multipliers have not closed it (:mod:`.augmented`;
the problem and its settings: :mod:`.problem`). Several starts
(the paper stresses global optimisation) are solved and the best kept: the closest to ``x_r``
among those that meet the constraint, else the one that comes closest to it.

Every solve reports, on the features of the float32 image it returns (computed by ``check``,
e.g. the deployed onnxruntime model, or the feature map itself): the feature residual
(distance to the target set), the same for the reference (``start_residual``), the pixel
distance to ``x_r`` and ``met``: residual <= ``rtol * start_residual + atol``. A solve that does
not meet it says so (``met`` False and ``message``); it never fails silently.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import InputError
from .augmented import homotopy, multipliers, polish
from .problem import DTYPES, FeatureMap, OutOfTime, Problem, SolverConfig
from .targets import BallTarget, Target

__all__ = ["FeatureMap", "Inversion", "SolverConfig", "StartResult", "invert", "segment_crossing"]

#: The features a result is judged on: numpy inputs (B, *input shape) -> (B, f).
FeatureCheck = Callable[[np.ndarray], np.ndarray]


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
            t = torch.from_numpy(np.ascontiguousarray(x)).to(DTYPES[cfg.dtype])
            return fmap(t).to(torch.float64).numpy()

    ref_features = features(xr[None].astype(np.float32))
    if ref_features.shape != (1, target.dim):
        raise InputError(
            f"the feature map gives shape {ref_features.shape[1:]} per input, the target has "
            f"{target.dim} features"
        )
    start_residual = float(target.residual(ref_features[0]))
    tol = cfg.rtol * start_residual + cfg.atol
    prob = Problem(fmap, target, xr.reshape(-1), shape, cfg, deadline)
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
            x, outer, stopped = multipliers(prob, x, stop)
            x = polish(prob, x, stop)
            if relax is not None and prob.violation(prob.constraint(x)) > stop:
                x, outer, stopped = homotopy(prob, x, stop, relax, (x, outer, stopped))
        except OutOfTime:
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
