"""The hull of the directions of a linear map of the training features, built so that its full
rounds can read the training features themselves.

A view holds the rows ``u_t = fl32(w_t)``, ``w_t = to_sphere(t A)`` (``A = None``: ``t / |t|``,
the spherical hull of :mod:`guard.detectors.sphere`; ``A`` = a half-whitening:
:mod:`guard.detectors.whitened`) for the rows ``t`` of ``points`` (float32, N x d), and a
:class:`~.hull.ConvexHullIndex` over them. Queried alone it is that index queried with
:meth:`directions`. Queried with the raw hull of the same ``points``
(:class:`~.hull_pair.HullPair`), its full rounds need no pass of their own: ``g . w_t`` is
``((A g) . t) s_t`` with ``s_t = 1 / |t A|``, so the compiled core multiplies the raw rows by the
directions ``A g`` in the same GEMM as the raw hull's, scales by :attr:`scale`, and widens the
certificate by the rounding of that product (``HullBlock::set_transform`` in
``native/hull_core.hpp``; it needs :attr:`kappa` >= max ``|t| / |t A|`` and :attr:`a_fro` >= the
Frobenius norm of ``A``).
"""

from __future__ import annotations

import numpy as np

from .errors import GeometryError
from .hull import ConvexHullIndex
from .hull_types import HullConfig, HullDistances
from .sphere import to_sphere

__all__ = ["HullView", "same_rows"]

_ROWS = 16384  # rows per block while transforming
_SAFETY = 1.0 + 1e-6  # on kappa and a_fro: far above the float64 rounding of computing them


class HullView:
    """The hull of ``to_sphere(t A)`` over the rows ``t`` of ``points`` (module docstring).

    Args:
        points: (N, d) float32 training features; kept by reference (:attr:`source`), so that
            :class:`~.hull_pair.HullPair` can tell that the view maps its raw hull's rows.
        transform: (d, d) map ``A`` applied on the right (``t A``), or ``None`` for the identity.
        config: the index's settings.
        device: where the index's full rounds scan when queried alone.

    Attributes:
        index: the :class:`~.hull.ConvexHullIndex` over the rows ``fl32(to_sphere(t A))``.
        transform: ``A`` as float64 (C-contiguous), or ``None``.
        scale: (N,) float32 ``fl32(1 / |t A|)``, 0 for a zero row.
        kappa: ``>= max |t| / |t A|`` over the nonzero rows (1 without a map).
        a_fro: ``>=`` the Frobenius norm of ``A`` (0 without a map).
        source: ``points``, as given.
    """

    def __init__(
        self,
        points: np.ndarray,
        transform: np.ndarray | None = None,
        config: HullConfig | None = None,
        *,
        device: str = "auto",
    ) -> None:
        T = np.asarray(points)
        if T.ndim != 2 or T.dtype != np.float32:
            raise GeometryError(f"expected float32 points (N, d), got {T.dtype} {T.shape}")
        N, d = T.shape
        A = None
        if transform is not None:
            A = np.ascontiguousarray(transform, dtype=np.float64)
            if A.shape != (d, d) or not np.all(np.isfinite(A)):
                raise GeometryError(f"expected a finite ({d}, {d}) transform, got {A.shape}")
        rows = np.empty((N, d), dtype=np.float32)
        scale = np.empty(N, dtype=np.float32)
        kappa = 0.0
        for lo in range(0, N, _ROWS):
            t = T[lo : lo + _ROWS].astype(np.float64)
            y = t if A is None else t @ A
            rows[lo : lo + len(t)] = to_sphere(y)
            norm = np.sqrt(np.einsum("ij,ij->i", y, y))
            with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
                scale[lo : lo + len(t)] = np.where(norm > 0, 1.0 / norm, 0.0)
                if A is not None:
                    tn = np.sqrt(np.einsum("ij,ij->i", t, t))
                    live = tn > 0
                    if np.any(live & (norm == 0)):
                        raise GeometryError("the transform maps a training point to 0")
                    if np.any(live):
                        kappa = max(kappa, float(np.max(tn[live] / norm[live])))
        self.source = points
        self.transform = A
        self.scale = scale
        self._finite = bool(np.all(np.isfinite(scale)))
        self.kappa = 1.0 if A is None else max(kappa, 1e-300) * _SAFETY
        self.a_fro = 0.0 if A is None else float(np.linalg.norm(A)) * _SAFETY
        self.index = ConvexHullIndex(rows, config, device=device)

    def __len__(self) -> int:
        return len(self.index)

    def directions(self, features: np.ndarray) -> np.ndarray:
        """``to_sphere(x A)`` of the rows of ``features`` (n, d), float64."""
        X = np.asarray(features, dtype=np.float64)
        return to_sphere(X if self.transform is None else X @ self.transform)

    def query(
        self, features: np.ndarray, *, top_support: int = 0, progress: bool = False
    ) -> HullDistances:
        """The certified hull distances of the directions of ``features`` (n, d), queried alone."""
        return self.index.query(
            self.directions(features), top_support=top_support, progress=progress
        )

    def fusable(self, raw: ConvexHullIndex) -> bool:
        """Whether the compiled core can scan this view over ``raw``'s rows: built from the same
        memory, both on the core's exact CPU scan, every scale finite."""
        return bool(
            same_rows(self.source, raw.points)
            and raw._core is not None
            and self.index._core is not None
            and raw.device == "cpu"
            and self.index.device == "cpu"
            and self._finite
        )


def same_rows(P: object, T: np.ndarray) -> bool:
    """Whether ``P`` is the very memory of the rows ``T`` (C-contiguous, same shape and dtype,
    same first byte): what a compiled scan over ``T`` may stand in for."""
    return bool(
        isinstance(P, np.ndarray)
        and P.shape == T.shape
        and P.dtype == T.dtype
        and P.flags.c_contiguous
        and P.__array_interface__["data"][0] == T.__array_interface__["data"][0]
    )
