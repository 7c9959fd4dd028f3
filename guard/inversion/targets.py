"""Where in the feature space a pre-image must land (paper eq. 15 and 17).

* :class:`PointTarget`: ``N_phi(x') = t`` (eq. 17): a flip point, a hull projection, any point.
* :class:`BallTarget`: ``||N_phi(x') - c|| <= lam`` (eq. 15, the ball ``B(c)``), or ``= lam``
  with ``perimeter=True`` (its perimeter, paper Fig. 7).
* :class:`BoundaryTarget`: the i|j decision boundary of the final layer (eq. 7-8: ``z_i = z_j``
  and no other class above them): any point of it, not a given one.

Each target gives its constraint in two forms: :meth:`residual` on numpy features (how far a
feature vector is from the target set; 0 inside it, what a solve reports) and :meth:`values`
on torch features (the constraint functions ``h(phi)`` the augmented Lagrangian works with;
:attr:`inequalities` marks which are ``h <= 0``, the others are ``h = 0``). numpy only here:
torch is imported by the methods that need it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import InputError

if TYPE_CHECKING:
    import torch

__all__ = ["BallTarget", "BoundaryTarget", "PointTarget", "Target"]


def _vector(v: Any, what: str) -> np.ndarray:
    a = np.asarray(v, dtype=np.float64)
    if a.ndim != 1 or a.size == 0 or not np.all(np.isfinite(a)):
        raise InputError(f"expected {what} as a finite 1-d feature vector, got shape {a.shape}")
    return a


@dataclass(frozen=True, eq=False)
class PointTarget:
    """``N_phi(x') = point`` (eq. 17): ``point`` (f,) float64."""

    point: np.ndarray

    def __post_init__(self) -> None:
        object.__setattr__(self, "point", _vector(self.point, "the target point"))

    @property
    def inequalities(self) -> np.ndarray:
        """(f,) all False: ``h(phi) = 0`` for every feature."""
        return np.zeros(self.dim, dtype=bool)

    @property
    def dim(self) -> int:
        return int(self.point.shape[0])

    @property
    def n_constraints(self) -> int:
        return self.dim

    @property
    def scale(self) -> float:
        """Feature magnitude of the target (for absolute tolerances)."""
        return float(np.linalg.norm(self.point))

    def residual(self, phi: np.ndarray) -> np.ndarray:
        """``||phi - point||`` per row of ``phi`` (N, f) (or a scalar for one vector)."""
        return np.linalg.norm(np.asarray(phi, dtype=np.float64) - self.point, axis=-1)

    def values(self, phi: torch.Tensor) -> torch.Tensor:
        """``phi - point``: (B, f) equality constraints."""
        import torch

        return phi - torch.as_tensor(self.point, dtype=phi.dtype, device=phi.device)


@dataclass(frozen=True, eq=False)
class BallTarget:
    """``||N_phi(x') - center|| <= radius`` (eq. 15), or ``= radius`` when ``perimeter``.

    ``center`` (f,) float64; ``radius`` >= 0 (a point target is ``PointTarget``; a radius of
    0 with ``perimeter`` is refused: it is not differentiable there)."""

    center: np.ndarray
    radius: float
    perimeter: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "center", _vector(self.center, "the ball's centre"))
        r = float(self.radius)
        if not (np.isfinite(r) and r > 0):
            raise InputError(
                f"expected a ball radius > 0 (use a PointTarget for radius 0), got {self.radius!r}"
            )
        object.__setattr__(self, "radius", r)

    @property
    def inequalities(self) -> np.ndarray:
        """(1,): True inside the ball (``h <= 0``), False on its perimeter (``h = 0``)."""
        return np.array([not self.perimeter])

    @property
    def dim(self) -> int:
        return int(self.center.shape[0])

    @property
    def n_constraints(self) -> int:
        return 1

    @property
    def scale(self) -> float:
        return float(np.linalg.norm(self.center)) + self.radius

    def residual(self, phi: np.ndarray) -> np.ndarray:
        """Distance of ``phi`` (N, f) to the ball (inside: 0) or to its perimeter."""
        d = np.linalg.norm(np.asarray(phi, dtype=np.float64) - self.center, axis=-1)
        return np.abs(d - self.radius) if self.perimeter else np.maximum(d - self.radius, 0.0)

    def values(self, phi: torch.Tensor) -> torch.Tensor:
        """``||phi - center|| - radius``: (B, 1); ``= 0`` (perimeter) or ``<= 0`` (ball).

        The norm is smoothed by 1e-30 under the root, so its gradient is finite at the centre."""
        import torch

        c = torch.as_tensor(self.center, dtype=phi.dtype, device=phi.device)
        d = torch.sqrt(((phi - c) ** 2).sum(dim=1, keepdim=True) + 1e-30)
        return d - self.radius


@dataclass(frozen=True, eq=False)
class BoundaryTarget:
    """The i|j decision boundary of ``logits = W phi + b`` (eq. 7-8): ``z_i = z_j`` and
    ``z_k <= z_i`` for every other class k; W (n, f), b (n,).

    Each constraint is a signed distance to its hyperplane (``(z_k - z_i) / ||w_k - w_i||``),
    so the residual (the largest violation) is in feature units. Pairs with ``w_k = w_i`` (no
    hyperplane) are left out."""

    W: np.ndarray
    b: np.ndarray
    i: int
    j: int
    _A: np.ndarray = field(init=False, repr=False)
    _c: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        W = np.asarray(self.W, dtype=np.float64)
        b = np.asarray(self.b, dtype=np.float64).reshape(-1)
        n = W.shape[0] if W.ndim == 2 else 0
        if W.ndim != 2 or b.shape != (n,) or not (0 <= self.i < n and 0 <= self.j < n):
            raise InputError(f"expected W (n, f), b (n,) and classes in 0..n-1, got {W.shape}")
        if self.i == self.j or not np.linalg.norm(W[self.i] - W[self.j]) > 0:
            raise InputError(f"classes {self.i} and {self.j} have no boundary between them")
        others = [k for k in range(n) if k not in (self.i, self.j)]
        others = [k for k in others if np.linalg.norm(W[k] - W[self.i]) > 0]
        rows = [self.j, *others]  # z_j - z_i = 0, then z_k - z_i <= 0
        A = W[rows] - W[self.i]
        norm = np.linalg.norm(A, axis=1)
        object.__setattr__(self, "W", W)
        object.__setattr__(self, "b", b)
        object.__setattr__(self, "_A", A / norm[:, None])
        object.__setattr__(self, "_c", (b[rows] - b[self.i]) / norm)

    @property
    def inequalities(self) -> np.ndarray:
        """The first constraint (``z_i = z_j``) is an equality, the others ``<= 0``."""
        ineq = np.ones(len(self._c), dtype=bool)
        ineq[0] = False
        return ineq

    @property
    def dim(self) -> int:
        return int(self.W.shape[1])

    @property
    def n_constraints(self) -> int:
        return len(self._c)

    @property
    def scale(self) -> float:
        return 1.0

    def residual(self, phi: np.ndarray) -> np.ndarray:
        """The largest violation of eq. 7-8 in feature units: ``|z_i - z_j| / ||w_i - w_j||``,
        or ``(z_k - z_i) / ||w_k - w_i||`` for a class k above class i (0 on the boundary)."""
        v = np.asarray(phi, dtype=np.float64) @ self._A.T + self._c
        v = np.where(self.inequalities, np.maximum(v, 0.0), np.abs(v))
        return v.max(axis=-1)

    def values(self, phi: torch.Tensor) -> torch.Tensor:
        """(B, m): ``(z_j - z_i) / ||w_j - w_i||`` (= 0), then ``(z_k - z_i) / ||w_k - w_i||``
        (<= 0)."""
        import torch

        A = torch.as_tensor(self._A, dtype=phi.dtype, device=phi.device)
        c = torch.as_tensor(self._c, dtype=phi.dtype, device=phi.device)
        return phi @ A.T + c


Target = PointTarget | BallTarget | BoundaryTarget
