"""The raw hull and the spherical hull of the same training features, queried in one set of
passes over the features.

The guard asks two certified hull distances of every input: to the hull of the training
features ``t`` (the paper's) and to the hull of their directions ``t / |t|`` (the spherical
hull, :mod:`guard.detectors.sphere`). Each full round of each hull reads all N x d training
rows, and at small batches that read is what a query costs (the scan is bound by memory
traffic). The directions need no rows of their own for the scan: ``g . (t / |t|)`` is
``(g . t) * s_t`` with ``s_t = fl32(1 / |t|)``, and the spherical hull's certificate takes the
extra rounding in (``HullBlock::set_scaled_scan`` in ``native/hull_core.hpp``). So the compiled
core (``native/hull_pair.hpp``) runs the rounds of both hulls in lock step, and each pass is one
GEMM over the raw rows for the open queries of both.

The answers are those of two separate :meth:`ConvexHullIndex.query` calls up to the float32
rounding that the certificates cover (the pools and candidates of a round come from float32
products, which differ in their last bits): every distance keeps ``lower <= true <= upper``
with the same tolerance. Where the fused scan does not apply (no compiled core, a scan on a GPU
or the PCA-bounded scan), :meth:`HullPair.query` makes the two separate calls.
"""

from __future__ import annotations

import numpy as np

from .errors import GeometryError
from .hull import ConvexHullIndex, result_arrays
from .hull_types import HullConfig, HullDistances
from .native import core as native_core
from .progress import progress_bar
from .regions import Regions, UnionOfBalls
from .sphere import to_sphere

__all__ = ["HullPair"]


class HullPair:
    """The hull of the training features ``raw`` and the hull of their directions (built here,
    :attr:`sphere`), queried together.

    Args:
        raw: the hull of the training features.
        config: the spherical hull's settings (``None``: ``raw.config``).
        device: where the spherical hull's full rounds scan (as :class:`ConvexHullIndex`).

    Attributes:
        raw: the hull of the training features.
        sphere: the hull of ``fl32(to_sphere(t))`` for the training features ``t``, row for row.
        fused: whether queries share their passes (both indices on the compiled core's exact
            scan on the CPU); otherwise :meth:`query` queries each index on its own.
    """

    def __init__(
        self, raw: ConvexHullIndex, config: HullConfig | None = None, *, device: str = "auto"
    ) -> None:
        N, d = raw.points.shape
        directions = np.empty((N, d), dtype=np.float32)
        scale = np.empty(N, dtype=np.float32)  # fl32(1 / |t|), 0 for a zero row
        step = max(256, (1 << 19) // max(d, 1))  # ~4 MB of float64 per block
        for lo in range(0, N, step):
            blk = raw.points[lo : lo + step].astype(np.float64)
            directions[lo : lo + len(blk)] = to_sphere(blk)
            norm = np.sqrt(np.einsum("ij,ij->i", blk, blk))
            with np.errstate(divide="ignore", over="ignore"):
                scale[lo : lo + len(blk)] = np.where(norm > 0, 1.0 / norm, 0.0)
        self.raw = raw
        self.sphere = ConvexHullIndex(directions, config or raw.config, device=device)
        self._scale = scale
        self.fused = bool(
            native_core is not None
            and raw._core is not None
            and self.sphere._core is not None
            and raw.device == "cpu"
            and self.sphere.device == "cpu"
            and np.all(np.isfinite(scale))
        )

    def query(
        self,
        features: np.ndarray,
        *,
        top_support: int = 8,
        threads: int = 1,
        progress: bool = False,
    ) -> tuple[HullDistances, HullDistances]:
        """The raw hull's distances of the rows of ``features`` (n, d) (``top_support`` weights
        each) and the spherical hull's distances of their directions (no weights), computed on
        ``threads`` threads (at most 2 help: one per hull, one half of the rows per scan; the
        answers do not depend on it)."""
        h, s, _ = self._query(features, None, top_support, threads, progress)
        return h, s

    def query_with_union(
        self,
        features: np.ndarray,
        union: UnionOfBalls,
        *,
        top_support: int = 8,
        threads: int = 1,
        progress: bool = False,
    ) -> tuple[HullDistances, HullDistances, Regions]:
        """:meth:`query`, and the membership of the rows in the union of balls ``union``; when
        its balls are centred on the raw hull's points (the same memory) its products come with
        the first pass (the same exact answers as ``union.query(features)``)."""
        h, s, r = self._query(features, union, top_support, threads, progress)
        assert r is not None
        return h, s, r

    def _shares_rows(self, union: UnionOfBalls) -> bool:
        P, T = union.points, self.raw.points
        return (
            union._core is not None
            and P.shape == T.shape
            and P.flags.c_contiguous
            and P.__array_interface__["data"][0] == T.__array_interface__["data"][0]
        )

    def _query(
        self,
        features: np.ndarray,
        union: UnionOfBalls | None,
        top_support: int,
        threads: int,
        progress: bool,
    ) -> tuple[HullDistances, HullDistances, Regions | None]:
        Q = np.asarray(features, dtype=np.float64)
        if Q.ndim != 2 or Q.shape[1] != self.raw.dim:
            raise GeometryError(f"expected queries (N, {self.raw.dim}), got {Q.shape}")
        if not np.all(np.isfinite(Q)):
            raise GeometryError("queries contain NaN or Inf")
        Qs = to_sphere(Q)
        ride = union is not None and self.fused and self._shares_rows(union)
        if not self.fused:
            return (
                self.raw.query(Q, top_support=top_support, progress=progress),
                self.sphere.query(Qs, top_support=0, progress=progress),
                None if union is None else union.query(features),
            )
        # queries equal to a training point (of either hull) are answered on their own, as
        # ConvexHullIndex.query answers them (distance 0 and the point itself as support)
        known = (self.raw._training_points(Q) >= 0) | (self.sphere._training_points(Qs) >= 0)
        rows = np.flatnonzero(~known)
        out_r = result_arrays(Q, top_support)
        out_s = result_arrays(Qs, 0)
        Qu = np.ascontiguousarray(features, dtype=np.float32)
        out_u = Regions.empty(len(Q)).arrays() if ride else None
        if np.any(known):
            alone = np.flatnonzero(known)
            _put(out_r, alone, vars(self.raw.query(Q[alone], top_support=top_support)))
            _put(out_s, alone, vars(self.sphere.query(Qs[alone], top_support=0)))
            if out_u is not None and union is not None:
                for arr, part in zip(out_u, union.query(Qu[alone]).arrays(), strict=True):
                    arr[alone] = part
        block = max(1, min(256, (64 << 20) // (4 * len(self.raw))))
        with progress_bar(total=len(Q), desc="hull distances", enabled=progress) as bar:
            bar.update(len(Q) - len(rows))
            for lo in range(0, len(rows), block):
                sel = rows[lo : lo + block]
                res_r, res_s, res_u = native_core.query_pair(  # type: ignore[union-attr]
                    self.raw._core,
                    np.ascontiguousarray(Q[sel]),
                    self.sphere._core,
                    np.ascontiguousarray(Qs[sel]),
                    self._scale,
                    top_support,
                    0,
                    threads,
                    union._core if ride else None,  # type: ignore[union-attr]
                    np.ascontiguousarray(Qu[sel]) if ride else None,
                )
                _put(out_r, sel, res_r)
                _put(out_s, sel, res_s)
                if out_u is not None:
                    for arr, part in zip(out_u, res_u, strict=True):
                        arr[sel] = part
                bar.update(len(sel))
        regions = None
        if out_u is not None:
            regions = Regions(*out_u)
        elif union is not None:
            regions = union.query(Qu)
        return HullDistances(**out_r), HullDistances(**out_s), regions


def _put(out: dict[str, np.ndarray], rows: np.ndarray, res: dict[str, np.ndarray | None]) -> None:
    for key, arr in out.items():
        value = res[key]
        if value is not None:
            arr[rows] = value
