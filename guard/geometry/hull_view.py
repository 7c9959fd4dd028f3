"""The hull of the directions of a linear map of the training features, built so that its full
rounds can read the training features themselves, and its rows need no memory of their own.

A view is the hull of the rows ``u_t = fl32(w_t)``, ``w_t = to_sphere(t A)`` (``A = None``:
``t / |t|``, the spherical hull of :mod:`guard.detectors.sphere`; ``A`` = a half-whitening:
:mod:`guard.detectors.whitened`) for the rows ``t`` of ``points`` (float32, N x d). It keeps
only the scale ``s_t = fl32(1 / |t A|)`` per row, not the rows:

* a full round needs ``g . w_t`` for every row, which is ``((A g) . t) s_t``: the compiled core
  multiplies the rows ``t`` by the directions ``A g`` and scales by :attr:`scale`, and widens
  the certificate by the rounding of that product (``ViewMap`` in ``native/hull_core.hpp``; it
  needs :attr:`kappa` >= max ``|t| / |t A|`` and :attr:`a_fro` >= the Frobenius norm of ``A``).
  Queried with the raw hull of the same ``points`` (:class:`~.hull_pair.HullPair`), that is the
  same GEMM as the raw hull's: the view needs no pass of its own;
* the pools and subsample of the inner rounds are searched the same way; only the rows that join
  a working set or could hold a round's maximum are computed, by ``view_row`` in
  ``native/kernels.hpp``, the one routine that computes a view's rows (:meth:`HullView.rows`
  calls it too).

Without the compiled core, or with full rounds on a GPU, the view builds a
:class:`~.hull.ConvexHullIndex` over its materialised rows instead (:attr:`HullView.index`, on
first use).
"""

from __future__ import annotations

import numpy as np

from .accel import surely_cpu
from .errors import GeometryError
from .floats import U32
from .hull import ConvexHullIndex, core_params, query_core, result_arrays, subsample_indices
from .hull_types import HullConfig, HullDistances
from .native import blas as native_blas
from .native import use as native_use
from .sphere import to_sphere

__all__ = ["HullView", "same_rows"]

_ROWS = 16384  # rows per block while transforming
_SAFETY = 1.0 + 1e-6  # on kappa and a_fro: far above the float64 rounding of computing them
# >= |fl32(w_t)| for |w_t| = 1 up to float64 rounding: the rows' largest norm, as the core's
# rounding bounds need it
_MAX_NORM = 1.0 + 4.0 * U32


class HullView:
    """The hull of ``to_sphere(t A)`` over the rows ``t`` of ``points`` (module docstring).

    Args:
        points: (N, d) float32 training features; kept by reference (:attr:`source`), so that
            :class:`~.hull_pair.HullPair` can tell that the view maps its raw hull's rows.
        transform: (d, d) map ``A`` applied on the right (``t A``), or ``None`` for the identity.
        config: the hull's settings.
        device: where the full rounds scan when queried alone.

    Attributes:
        transform: ``A`` as float64 (C-contiguous), or ``None``.
        scale: (N,) float32 ``fl32(1 / |t A|)``, 0 for a zero row.
        kappa: ``>= max |t| / |t A|`` over the nonzero rows (1 without a map).
        a_fro: ``>=`` the Frobenius norm of ``A`` (0 without a map).
        source: ``points``, as given.
        config: the hull's settings.
        engine: ``"native"`` (the compiled core computes rows on demand) or ``"index"`` (a
            :class:`~.hull.ConvexHullIndex` over the materialised rows, :attr:`index`).
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
        if T.ndim != 2 or T.dtype != np.float32 or T.shape[0] == 0:
            raise GeometryError(f"expected float32 points (N >= 1, d), got {T.dtype} {T.shape}")
        if config is None:
            config = HullConfig()
        if not isinstance(config, HullConfig):
            raise GeometryError(f"expected a HullConfig, got {type(config).__name__}")
        N, d = T.shape
        A = None
        if transform is not None:
            A = np.ascontiguousarray(transform, dtype=np.float64)
            if A.shape != (d, d) or not np.all(np.isfinite(A)):
                raise GeometryError(f"expected a finite ({d}, {d}) transform, got {A.shape}")
        scale = np.empty(N, dtype=np.float32)
        kappa = 0.0
        for lo in range(0, N, _ROWS):
            t = T[lo : lo + _ROWS].astype(np.float64)
            if not np.all(np.isfinite(t)):
                raise GeometryError("training features contain NaN or Inf")
            y = t if A is None else t @ A
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
        self.config = config
        self.kappa = 1.0 if A is None else max(kappa, 1e-300) * _SAFETY
        self.a_fro = 0.0 if A is None else float(np.linalg.norm(A)) * _SAFETY
        self._device = device
        self._index: ConvexHullIndex | None = None
        core = native_use(config.engine) if config.scan == "exact" else None
        self._core = None
        if core is not None and surely_cpu(device) and bool(np.all(np.isfinite(scale))):
            T = np.ascontiguousarray(T)  # (the same memory when it already is)
            sub = subsample_indices(N, config.subsample, config.seed)
            self._core = core.HullCore(
                T,
                sub,
                scale,
                A,
                self.kappa,
                self.a_fro,
                core_params(config, N, d, len(sub), _MAX_NORM),
                native_blas(),
            )
        self.engine = "index" if self._core is None else "native"

    def __len__(self) -> int:
        return int(self.scale.shape[0])

    @property
    def dim(self) -> int:
        """d, the feature dimension."""
        return int(np.shape(self.source)[1])

    def rows(self, idx: np.ndarray | None = None) -> np.ndarray:
        """The view's rows ``fl32(to_sphere(t A))`` (n, d) float32 at the training indices
        ``idx`` (n,) (``None``: all N): computed as the compiled core computes them when it is
        built, else by numpy."""
        T = np.ascontiguousarray(self.source)
        native = native_use("auto")
        if native is not None:
            rows = None if idx is None else np.ascontiguousarray(idx, dtype=np.int64)
            return native.view_rows(T, self.transform, rows)
        sel = T if idx is None else T[np.asarray(idx, dtype=np.int64)]
        out = np.empty(sel.shape, dtype=np.float32)
        for lo in range(0, len(sel), _ROWS):
            t = sel[lo : lo + _ROWS].astype(np.float64)
            out[lo : lo + len(t)] = to_sphere(t if self.transform is None else t @ self.transform)
        return out

    @property
    def index(self) -> ConvexHullIndex:
        """A :class:`~.hull.ConvexHullIndex` over the materialised rows (N x d float32, built
        on first use): what answers queries without the compiled core."""
        if self._index is None:
            self._index = ConvexHullIndex(self.rows(), self.config, device=self._device)
        return self._index

    def directions(self, features: np.ndarray) -> np.ndarray:
        """``to_sphere(x A)`` of the rows of ``features`` (n, d), float64."""
        X = np.asarray(features, dtype=np.float64)
        return to_sphere(X if self.transform is None else X @ self.transform)

    def query(
        self, features: np.ndarray, *, top_support: int = 0, progress: bool = False
    ) -> HullDistances:
        """The certified hull distances of the directions of ``features`` (n, d), queried alone."""
        return self.query_directions(
            self.directions(features), top_support=top_support, progress=progress
        )

    def query_directions(
        self, directions: np.ndarray, *, top_support: int = 0, progress: bool = False
    ) -> HullDistances:
        """The certified distances of the rows of ``directions`` (n, d), points of the view's
        own space, to its hull, queried alone."""
        Q = np.asarray(directions, dtype=np.float64)
        if Q.ndim != 2 or Q.shape[1] != self.dim:
            raise GeometryError(f"expected queries (N, {self.dim}), got {Q.shape}")
        if not np.all(np.isfinite(Q)):
            raise GeometryError("queries contain NaN or Inf")
        if self._core is None:
            return self.index.query(Q, top_support=top_support, progress=progress)
        out = result_arrays(Q, top_support)
        rows = np.arange(len(Q))
        return query_core(self._core, len(self), Q, rows, out, None, top_support, progress)

    def fusable(self, raw: ConvexHullIndex) -> bool:
        """Whether the compiled core can scan this view over ``raw``'s rows: a view computed on
        demand from the same memory, ``raw`` on the core's exact CPU scan."""
        return bool(
            self._core is not None
            and same_rows(self.source, raw.points)
            and raw._core is not None
            and raw.device == "cpu"
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
