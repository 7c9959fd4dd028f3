"""Union of learned regions: the balls B(x_t) of radius d_min(x_t) around training points.

Section 7.2 of the paper: every point of B(x_t) has the classification of x_t, so the union of
these balls is a region the model is known to classify consistently. For a query ``q`` we report
whether some ball contains it (``||q - x_t|| < r_t``), how many do, and the largest slack
``max_t r_t - ||q - x_t||`` (positive inside the union, negative outside).

:class:`UnionOfBalls` scans every ball for a chunk of queries with one float32 matrix product
(``r_t^2 - ||q - x_t||^2 = (r_t^2 - ||x_t||^2) + 2 q.x_t - ||q||^2``), bounds its rounding error,
and recomputes in float64 every ball whose membership, or whose slack near the maximum, the
rounding could change: counts, memberships and the best slack are exact.
(The first version, a FAISS kNN + range search, lives on in the tests as an independent check.)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .accel import RowProducts
from .errors import GeometryError
from .floats import U32 as _U32
from .native import ENGINES
from .native import blas as native_blas
from .native import use as native_use


@dataclass(frozen=True)
class Regions:
    """Membership of N queries in the union of learned regions.

    Attributes:
        in_union: (N,) bool, some training ball contains the query.
        n_balls: (N,) int64, number of training balls containing it.
        slack: (N,) float64, ``max_t r_t - ||q - x_t||``.
        best_ball: (N,) int64, training index attaining that slack.
    """

    in_union: np.ndarray
    n_balls: np.ndarray
    slack: np.ndarray
    best_ball: np.ndarray

    @classmethod
    def empty(cls, n: int) -> Regions:
        """N queries in no ball (arrays to fill in)."""
        return cls(
            np.zeros(n, dtype=bool),
            np.zeros(n, dtype=np.int64),
            np.full(n, -np.inf),
            np.full(n, -1, dtype=np.int64),
        )

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        return self.in_union, self.n_balls, self.slack, self.best_ball


class UnionOfBalls:
    """The union of balls ``(points[t], radii[t])``; :meth:`query` is exact.

    Args:
        points: (N, d) float32 ball centres (kept by reference: a view of a FAISS index's
            storage does not copy the training features).
        radii: (N,) finite radii ``r_t >= 0``. Radii far beyond the data's scale (a class no
            other class borders gets a huge stand-in) are handled apart, in float64.
        device: where the scan runs (:class:`guard.accel.RowProducts`; auto: a CUDA GPU
            through torch when present, else the CPU).
        engine: on the CPU, ``"auto"`` runs the compiled scan (:mod:`guard.geometry.native`:
            the same float32 arithmetic and bounds, fused per block of balls) when it is built,
            ``"native"`` requires it, ``"numpy"`` runs the numpy scan. Same answers.
    """

    def __init__(
        self, points: np.ndarray, radii: np.ndarray, device: str = "auto", engine: str = "auto"
    ) -> None:
        radii = np.asarray(radii, dtype=np.float64)
        if points.ndim != 2 or radii.shape != (points.shape[0],) or not np.all(np.isfinite(radii)):
            raise GeometryError(f"expected {points.shape[0]} finite radii, got shape {radii.shape}")
        self.points = points if points.dtype == np.float32 else points.astype(np.float32)
        self.radii = radii
        tn = np.empty(len(points))
        for lo in range(0, len(points), 65536):  # float64 norms without an N x d float64 copy
            blk = self.points[lo : lo + 65536].astype(np.float64)
            tn[lo : lo + len(blk)] = np.einsum("ij,ij->i", blk, blk)
        self.max_norm = float(np.sqrt(tn.max())) if len(tn) else 0.0
        self.huge = np.flatnonzero(radii > 1e3 * (1.0 + self.max_norm))
        offset = radii * radii - tn  # r_t^2 - ||x_t||^2
        offset[self.huge] = -np.inf  # never inside, never the best slack in the float32 scan
        self.big = float(np.abs(offset[np.isfinite(offset)]).max(initial=0.0))
        self.r_max = float(np.delete(radii, self.huge).max(initial=0.0))
        self._r32 = radii.astype(np.float32)
        self._r2 = radii * radii
        self._r2_32 = self._r2.astype(np.float32)
        self._off32 = offset.astype(np.float32)
        self._scan = RowProducts(self.points, device)
        if engine not in ENGINES:
            raise GeometryError(f"engine must be one of {ENGINES}, got {engine!r}")
        core = native_use(engine) if self._scan.device == "cpu" else None
        self.engine = "numpy" if core is None else "native"
        self._core = None
        if core is not None:
            self._core = core.UnionCore(
                np.ascontiguousarray(self.points),
                np.ascontiguousarray(self.radii),
                np.ascontiguousarray(self._r2),
                self._r32,
                self._r2_32,
                self._off32,
                self.huge.astype(np.int64),
                self.big,
                self.r_max,
                self.max_norm,
                native_blas(),
            )

    def query(self, queries: np.ndarray, *, chunk: int = 32) -> Regions:
        """Membership of ``queries`` (M, d): exact counts, memberships and best slacks."""
        Q = np.ascontiguousarray(queries, dtype=np.float32)
        N, d = self.points.shape
        if Q.ndim != 2 or Q.shape[1] != d:
            raise GeometryError(f"expected queries (M, {d}), got {Q.shape}")
        m = Q.shape[0]
        in_union, n_balls, slack_out, best = Regions.empty(m).arrays()
        if N == 0 or m == 0:
            return Regions(in_union, n_balls, slack_out, best)
        if self._core is not None:
            return Regions(*self._core.query(Q))
        gamma = d * _U32 / (1 - d * _U32)  # float32 dot products: |error| <= gamma |q| |x|
        r2 = self._r2
        for lo in range(0, m, chunk):
            q = Q[lo : lo + chunk]
            q64 = q.astype(np.float64)
            qn = np.einsum("ij,ij->i", q64, q64)
            # V[t, i] ~ r_t^2 - ||q_i - x_t||^2 in float32 (N x chunk: the fast orientation of
            # the product). Error: the dot products' 2 gamma |q| |x|, plus the rounding of the
            # stored offset, the doubling and the two additions (each <= u of a magnitude
            # below big + 2 |q| |x| + |q|^2), padded.
            V = self._scan.by_row(q)
            V *= 2.0
            V += self._off32[:, None]
            V -= qn.astype(np.float32)
            qx = np.sqrt(qn) * self.max_norm
            err = (2.0 * gamma * qx + 4.0 * _U32 * (self.big + 2.0 * qx + qn)) * 1.01 + 1e-30
            err32 = err.astype(np.float32)
            inside = V > err32
            t_idx, r_idx = np.nonzero((V >= -err32) & ~inside)
            if len(r_idx):  # float64 recheck of memberships the rounding could flip
                inside[t_idx, r_idx] = r2[t_idx] > self._d2(q64[r_idx], t_idx)
            counts = inside.sum(axis=0)
            # slack r - ||q - x||: |error of the distance| <= sqrt(err) + float32 rounding of
            # the subtraction, the square root and the final subtraction (magnitudes below
            # |q| + |x| + r_max)
            np.subtract(self._r2_32[:, None], V, out=V)
            np.maximum(V, 0.0, out=V)
            np.sqrt(V, out=V)
            np.subtract(self._r32[:, None], V, out=V)  # V is now the slack (-inf: huge balls)
            top = V.max(axis=0).astype(np.float64)
            mag = np.sqrt(qn) + self.max_norm + self.r_max
            tol = (2.0 * np.sqrt(err) + 8.0 * _U32 * (mag + np.abs(top))) * 1.01
            cand_t, cand_i = np.nonzero(V >= (top - tol).astype(np.float32))
            if len(self.huge):  # huge balls: exactly, in float64
                hh = np.repeat(self.huge, len(q))
                ii = np.tile(np.arange(len(q)), len(self.huge))
                counts += (r2[hh] > self._d2(q64[ii], hh)).reshape(len(self.huge), -1).sum(0)
                cand_t, cand_i = np.concatenate([cand_t, hh]), np.concatenate([cand_i, ii])
            n_balls[lo : lo + len(q)] = counts
            in_union[lo : lo + len(q)] = counts > 0
            exact = self.radii[cand_t] - np.sqrt(self._d2(q64[cand_i], cand_t))
            for i in range(len(q)):  # the exact best among each query's candidates
                sel = np.flatnonzero(cand_i == i)
                j = sel[int(np.argmax(exact[sel]))]
                slack_out[lo + i], best[lo + i] = float(exact[j]), int(cand_t[j])
        return Regions(in_union, n_balls, slack_out, best)

    def _d2(self, q64: np.ndarray, idx: np.ndarray) -> np.ndarray:
        diff = self.points[idx].astype(np.float64) - q64
        return np.einsum("ij,ij->i", diff, diff)
