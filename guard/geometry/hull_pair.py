"""The raw hull, the spherical hull and further views of the same training features, queried in
one set of passes over the features.

The guard asks two certified hull distances of every input: to the hull of the training
features ``t`` (the paper's) and to the hull of their directions ``t / |t|`` (the spherical
hull, :mod:`guard.detectors.sphere`); its default abstention score asks two more, to the hulls of
the directions of ``t A`` for two half-whitening maps ``A`` (:mod:`guard.detectors.whitened`).
Each full round of each hull reads all N x d training rows, and at small batches that read is
what a query costs (the scan is bound by memory traffic). The directions need no rows of their
own for the scan: ``g . (t A / |t A|)`` is ``((A g) . t) * s_t`` with ``s_t = fl32(1 / |t A|)``,
and the view's certificate takes the extra rounding in (:mod:`.hull_view`). So the compiled core
(``native/hull_pair.hpp``) runs the rounds of all the hulls in lock step, and each pass is one
GEMM over the raw rows for the open queries of every hull. The views keep no rows of their
own: the core computes the few it needs.

The answers are those of separate :meth:`ConvexHullIndex.query` calls up to the float32
rounding that the certificates cover (the pools and candidates of a round come from float32
products, which differ in their last bits): every distance keeps ``lower <= true <= upper``
with the same tolerance. Where the fused scan does not apply (no compiled core, a scan on a GPU
or the PCA-bounded scan, a view of other points), :meth:`HullPair.query_all` queries each index
on its own.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .errors import GeometryError
from .hull import ConvexHullIndex, query_block, result_arrays
from .hull_types import HullConfig, HullDistances
from .hull_view import HullView, same_rows
from .native import core as native_core
from .progress import progress_bar
from .regions import Regions, UnionOfBalls

__all__ = ["HullPair"]


class HullPair:
    """The hull of the training features ``raw`` and the hull of their directions (built here,
    :attr:`sphere`), queried together, with any further :class:`~.hull_view.HullView` of the
    same features.

    Args:
        raw: the hull of the training features.
        config: the spherical hull's settings (``None``: ``raw.config``).
        device: where the spherical hull's full rounds scan (as :class:`ConvexHullIndex`).

    Attributes:
        raw: the hull of the training features.
        sphere_view: the hull of ``fl32(to_sphere(t))`` for the training features ``t``, row for
            row (a :class:`~.hull_view.HullView` without a map).
        fused: whether queries share their passes (both indices on the compiled core's exact
            scan on the CPU); otherwise :meth:`query` queries each index on its own.
    """

    def __init__(
        self, raw: ConvexHullIndex, config: HullConfig | None = None, *, device: str = "auto"
    ) -> None:
        self.raw = raw
        self.sphere_view = HullView(raw.points, None, config or raw.config, device=device)
        self.fused = native_core is not None and self.sphere_view.fusable(raw)

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
        ``threads`` threads (at most 2 help: they share each round's per-query work and split
        each scan's rows in halves; the answers do not depend on it)."""
        h, s, _, _ = self.query_all(
            features, top_support=top_support, threads=threads, progress=progress
        )
        assert s is not None
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
        h, s, _, r = self.query_all(
            features, union, top_support=top_support, threads=threads, progress=progress
        )
        assert s is not None and r is not None
        return h, s, r

    def query_all(
        self,
        features: np.ndarray,
        union: UnionOfBalls | None = None,
        views: Sequence[HullView] = (),
        *,
        sphere: bool = True,
        top_support: int = 8,
        threads: int = 1,
        progress: bool = False,
    ) -> tuple[HullDistances, HullDistances | None, list[HullDistances], Regions | None]:
        """:meth:`query_with_union` (``union`` may be ``None``; the spherical hull's distances
        only with ``sphere``, else ``None``) and the distances of the rows in each of ``views``
        (no weights), in that order: those built over the raw hull's points
        (:meth:`HullView.fusable`) share the passes, any other is queried on its own."""
        Q = np.asarray(features, dtype=np.float64)
        if Q.ndim != 2 or Q.shape[1] != self.raw.dim:
            raise GeometryError(f"expected queries (N, {self.raw.dim}), got {Q.shape}")
        if not np.all(np.isfinite(Q)):
            raise GeometryError("queries contain NaN or Inf")
        ride = union is not None and self.fused and self._shares_rows(union)
        views = list(views)
        fuse = [self.fused and v.fusable(self.raw) for v in views]
        if not self.fused:
            return (
                self.raw.query(Q, top_support=top_support, progress=progress),
                self.sphere_view.query(Q, progress=progress) if sphere else None,
                [v.query(Q, progress=progress) for v in views],
                None if union is None else union.query(features),
            )
        shared = [self.sphere_view] if sphere else []
        shared += [v for v, f in zip(views, fuse, strict=True) if f]
        dirs = [v.directions(Q) for v in shared]
        # queries equal to a training point are answered on their own, as ConvexHullIndex.query
        # answers them (distance 0 and the point itself as support)
        known = self.raw._training_points(Q) >= 0
        rows = np.flatnonzero(~known)
        out_r = result_arrays(Q, top_support)
        outs = [result_arrays(D, 0) for D in dirs]
        Qu = np.ascontiguousarray(features, dtype=np.float32)
        out_u = Regions.empty(len(Q)).arrays() if ride else None
        if np.any(known):
            alone = np.flatnonzero(known)
            _put(out_r, alone, vars(self.raw.query(Q[alone], top_support=top_support)))
            for v, D, out in zip(shared, dirs, outs, strict=True):
                _put(out, alone, vars(v.query_directions(D[alone])))
            if out_u is not None and union is not None:
                for arr, part in zip(out_u, union.query(Qu[alone]).arrays(), strict=True):
                    arr[alone] = part
        block = query_block(len(self.raw))
        with progress_bar(total=len(Q), desc="hull distances", enabled=progress) as bar:
            bar.update(len(Q) - len(rows))
            for lo in range(0, len(rows), block):
                sel = rows[lo : lo + block]
                args = [
                    (v._core, np.ascontiguousarray(D[sel]), 0)
                    for v, D in zip(shared, dirs, strict=True)
                ]
                res_r, res_v, res_u = native_core.query_views(  # type: ignore[union-attr]
                    self.raw._core,
                    np.ascontiguousarray(Q[sel]),
                    top_support,
                    args,
                    threads,
                    union._core if ride else None,  # type: ignore[union-attr]
                    np.ascontiguousarray(Qu[sel]) if ride else None,
                )
                _put(out_r, sel, res_r)
                for out, res in zip(outs, res_v, strict=True):
                    _put(out, sel, res)
                if out_u is not None:
                    for arr, part in zip(out_u, res_u, strict=True):
                        arr[sel] = part
                bar.update(len(sel))
        regions = None
        if out_u is not None:
            regions = Regions(*out_u)
        elif union is not None:
            regions = union.query(Qu)
        done = [HullDistances(**out) for out in outs]
        sph = done.pop(0) if sphere else None
        fused = iter(done)
        rest = [
            next(fused) if f else v.query(Q, progress=progress)
            for v, f in zip(views, fuse, strict=True)
        ]
        return HullDistances(**out_r), sph, rest, regions

    def _shares_rows(self, union: UnionOfBalls) -> bool:
        return union._core is not None and same_rows(union.points, self.raw.points)


def _put(out: dict[str, np.ndarray], rows: np.ndarray, res: dict[str, np.ndarray | None]) -> None:
    for key, arr in out.items():
        value = res[key]
        if value is not None:
            arr[rows] = value
