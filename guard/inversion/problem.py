"""One pre-image problem (:mod:`.solver`): its settings (:class:`SolverConfig`) and the
objective, constraint and Jacobian of one start (:class:`Problem`), all evaluated through the
differentiable feature map under a wall-clock deadline."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import InputError
from .targets import Target

__all__ = ["DTYPES", "FeatureMap", "OutOfTime", "Problem", "SolverConfig"]

#: A differentiable feature map: inputs (B, *input shape) -> features (B, f).
FeatureMap = Callable[[torch.Tensor], torch.Tensor]

DTYPES = {"float32": torch.float32, "float64": torch.float64}


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
        if self.dtype not in DTYPES:
            raise InputError(f"expected dtype float32 or float64, got {self.dtype!r}")
        if self.max_seconds is not None and not self.max_seconds > 0:
            raise InputError(f"expected max_seconds > 0 or None, got {self.max_seconds}")


class OutOfTime(Exception):
    pass
    """A solve ran past its ``max_seconds``."""


@dataclass
class Problem:
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
        return DTYPES[self.cfg.dtype]

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
            raise OutOfTime

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
