"""Certified distance to the convex hull of the training features (paper eq. 20-25).

For a query ``q`` the distance to ``conv(T)`` of N training features is computed by column
generation with a certificate:

1. A small QP ``min ||q - S^T a||  s.t.  a >= 0, sum(a) = 1`` is solved exactly on a working set
   ``S`` of training points (:func:`min_norm_point_warm`, warm-started from the previous
   multipliers). ``p = S^T a`` lies in the hull, so ``||q - p||`` is an **upper bound**.
2. With ``g = q - p`` every point ``h`` of the hull satisfies
   ``||q - h|| >= (g.q - M) / ||g||`` for any ``M >= max_t g.t`` over **all** N training points:
   a **lower bound**. Computing a rigorous ``M`` needs a pass over all N points (a *full round*).
3. If ``(upper - lower) > tol * upper`` the points with the largest ``g.t`` (they violate the
   current supporting hyperplane) join ``S`` and the QP is solved again; repeat until the gap
   closes or the round budget is spent (then ``converged`` is False, the bounds still hold).

Full rounds are the expensive part, so the algorithm spends as few
as possible:

* Between full rounds the violators are searched in a small *pool* (a fixed random subsample of
  the training set before the first full round; afterwards the points a full round found to be
  largest along ``g``). These inner rounds are cheap (a few thousand points) and need no
  certificate; only full rounds certify.
* A full round computes ``M`` in one of two ways (``scan``):

  - ``"exact"``: one float32 GEMM over the N x d features with a rigorous rounding-error bound;
    the few points whose float32 value could be the maximum are re-evaluated in float64, so ``M``
    is the exact maximum.
  - ``"pca"``: a rigorous Cauchy-Schwarz bound from k principal coefficients per point
    (:mod:`guard.geometry.hull_pca`) excludes most points; only those it cannot exclude are
    evaluated exactly. ``M`` is then a rigorous upper bound on ``max_t g.t``, tight enough to
    close the gap to ``tol``.
  ``"exact"`` is the default (it holds nothing beyond the features); ``"pca"`` costs k/d of the
  feature matrix in memory (default model: k = 27 of 64, +42%, for 3% lower p50 latency in
  bench/results/hull.md);
  ``"auto"`` picks ``"pca"`` when k <= d/2 principal directions leave at most
  ``pca_residual`` of the variance, else ``"exact"``.

The settings are one :class:`HullConfig`; a query block's work is split into its start sets
(:meth:`ConvexHullIndex._start`), full rounds (:meth:`ConvexHullIndex._round`) and one
:class:`_QueryResult` per query, assembled into :class:`HullDistances`.

The previous scheme (FAISS kNN working set, a full exact scan every round) is frozen in
``tests/reference/hull_v2.py`` for benchmarks and tests.

At the optimum the supporting hyperplane touches the hull, so the gap closes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import faiss
import numpy as np

from .accel import RowProducts
from .errors import GeometryError
from .floats import U32 as _U32
from .floats import U64 as _U64
from .floats import blocks as _blocks
from .hull_pca import PcaBound, PcaMax
from .hull_types import HullConfig, HullDistances
from .native import blas as native_blas
from .native import use as native_use
from .progress import progress_bar
from .qp import min_norm_point_warm

_MAX_INNER = 50  # inner rounds (pool searches) between two full rounds
SUBSAMPLE = 2048  # default size of the first pool (HullConfig.subsample)


@dataclass(frozen=True, eq=False)
class _QueryResult:
    """The outcome of one query: one row of :class:`HullDistances` before the support is cut.

    Attributes:
        upper: ``||q - p||``.
        lower: certified lower bound on the distance.
        projection: (d,) the hull point ``p``.
        working_set: (m,) training indices of the final working set.
        alpha: (m,) their convex weights (``p = alpha @ T[working_set]``).
        rounds: full rounds used.
        converged: whether the gap closed (or the query lies inside).
        qp_solves: small QPs solved.
        exact_fraction: points evaluated exactly in the full rounds, of ``N * rounds``.
    """

    upper: float
    lower: float
    projection: np.ndarray
    working_set: np.ndarray
    alpha: np.ndarray
    rounds: int
    converged: bool
    qp_solves: int
    exact_fraction: float

    @classmethod
    def training_point(cls, q: np.ndarray, t: int) -> _QueryResult:
        """The query (d,) equals training point ``t``: distance 0, nothing solved."""
        return cls(
            upper=0.0,
            lower=0.0,
            projection=q.copy(),
            working_set=np.array([t]),
            alpha=np.ones(1),
            rounds=0,
            converged=True,
            qp_solves=0,
            exact_fraction=0.0,
        )

    def support(self, top: int) -> tuple[np.ndarray, np.ndarray]:
        """Training indices (<= top,) of the largest positive weights and those weights."""
        order = np.argsort(-self.alpha, kind="stable")[:top]
        order = order[self.alpha[order] > 0]
        return self.working_set[order], self.alpha[order]


def _top_indices(v: np.ndarray, m: int, floor: float | None = None) -> np.ndarray:
    """Indices of the ``m`` largest entries of ``v`` (fewer if fewer exceed ``floor``),
    unordered. A cut estimated on a strided sample spares a partition of all of ``v``."""
    n = len(v)
    fl = -np.inf if floor is None else float(floor)
    if n <= 4 * m:
        idx = np.arange(n) if floor is None else np.flatnonzero(v > fl)
    else:
        s = v[:: max(1, m // 16)]
        ns = len(s)
        r = max(1, (m * ns) // n)
        while True:
            cut = float(np.partition(s, ns - r)[ns - r])
            idx = np.flatnonzero(v >= cut) if cut > fl else np.flatnonzero(v > fl)
            if len(idx) >= m or r >= ns or cut <= fl:
                break
            r = min(ns, 4 * r)  # unlucky sample: lower the cut
        if floor is not None:
            idx = idx[v[idx] > fl]
    if len(idx) > m:
        idx = idx[np.argpartition(v[idx], len(idx) - m)[len(idx) - m :]]
    return idx


def _unset() -> np.ndarray:
    return np.empty(0)


@dataclass(eq=False, slots=True)
class _Query:
    """Column-generation state of one query (mutated by the rounds).

    Attributes:
        row: the query's row in its block.
        q: (d,) the query (float64).
        ws: (m,) training indices of the working set.
        pool: (P,) training indices the inner rounds search.
        pool32: (P, d) their float32 features.
        mark: (N,) scratch booleans shared by a block's queries (membership in a working set).
        dual: (m,) multipliers warm-starting the next QP (read once ``qp > 0``).
        alpha: (m,) convex weights of the last QP.
        p: (d,) ``alpha @ T[ws]``, the hull point.
        g: (d,) ``q - p``.
        up: ``||g||``, the upper bound.
        qp: QPs solved.
        evals: points evaluated exactly in full rounds.
    """

    row: int
    q: np.ndarray
    ws: np.ndarray
    pool: np.ndarray
    pool32: np.ndarray
    mark: np.ndarray
    # set by the first inner round, which runs before anything reads them
    dual: np.ndarray = field(default_factory=_unset)
    alpha: np.ndarray = field(default_factory=_unset)
    p: np.ndarray = field(default_factory=_unset)
    g: np.ndarray = field(default_factory=_unset)
    up: float = np.inf
    qp: int = 0
    evals: int = 0

    def result(self, lower: float, rounds: int, converged: bool, n_points: int) -> _QueryResult:
        """The query's outcome after ``rounds`` full rounds over ``n_points`` points."""
        return _QueryResult(
            upper=self.up,
            lower=lower,
            projection=self.p,
            working_set=self.ws,
            alpha=self.alpha,
            rounds=rounds,
            converged=converged,
            qp_solves=self.qp,
            exact_fraction=self.evals / max(n_points * rounds, 1),
        )


class ConvexHullIndex:
    """Index of training features answering certified distance-to-hull queries.

    Args:
        points: (N, d) training features, stored as float32 (the model's own precision) in
            the FAISS index. :meth:`from_index` builds on an existing index instead.
        config: the settings (:class:`HullConfig`; ``None``: the defaults).
        device: where full rounds scan (:class:`guard.geometry.accel.RowProducts`: ``auto`` =
            a CUDA GPU through torch when present, else the CPU).

    Attributes:
        config: the :class:`HullConfig`.
        index: the exact FAISS ``IndexFlat`` over the features.
        points: (N, d) float32 features, a view of the index's own storage.
        max_norm: the largest training-feature norm.
        scan: the full-round scan in use, ``"exact"`` or ``"pca"`` (what ``"auto"`` chose).
        pca_k: principal directions of the PCA-bounded scan (0 for the exact scan).
        explained_variance: variance fraction they explain (set only when ``scan == "pca"``).
        device: where full rounds scan (``"cpu"``, ``"torch"`` or ``"cuda"``).
    """

    def __init__(
        self, points: np.ndarray, config: HullConfig | None = None, *, device: str = "auto"
    ) -> None:
        points = np.ascontiguousarray(points, dtype=np.float32)
        if points.ndim != 2 or points.shape[0] == 0:
            raise GeometryError(
                f"expected training features (N, d) with N >= 1, got {points.shape}"
            )
        if not np.all(np.isfinite(points)):
            raise GeometryError("training features contain NaN or Inf")
        index = faiss.IndexFlatL2(points.shape[1])
        index.add(points)
        self._build(index, config, device)

    @classmethod
    def from_index(
        cls, index: faiss.IndexFlat, config: HullConfig | None = None, *, device: str = "auto"
    ) -> ConvexHullIndex:
        """The index over the features a prebuilt exact FAISS ``IndexFlat`` holds (e.g. read
        from an artifact); the features stay in the index's storage, not copied."""
        self = cls.__new__(cls)
        self._build(index, config, device)
        return self

    def _build(self, index: faiss.Index, config: HullConfig | None, device: str) -> None:
        if config is None:
            config = HullConfig()
        if not isinstance(config, HullConfig):
            raise GeometryError(f"expected a HullConfig, got {type(config).__name__}")
        if not isinstance(index, faiss.Index):
            raise GeometryError(f"expected a FAISS IndexFlat, got {type(index).__name__}")
        if not isinstance(index, faiss.IndexFlat):
            self._owner = index  # downcast_index returns a wrapper that does not own the index
            index = faiss.downcast_index(index)
        if not isinstance(index, faiss.IndexFlat) or index.ntotal == 0:
            raise GeometryError(
                "expected a non-empty exact FAISS IndexFlat over the training features"
            )
        self.config = config
        self.index = index
        # The training features live once in memory: a view of the FAISS index's own storage.
        self.points = faiss.rev_swig_ptr(index.get_xb(), index.ntotal * index.d).reshape(
            index.ntotal, index.d
        )
        self.max_norm = float(
            np.sqrt(max(float(np.einsum("ij,ij->i", b, b).max()) for b in _blocks(self.points)))
        )
        # Settings that depend on the data: clipped to N, atol scaled by the features' size.
        self._build_subsample(config.subsample, config.seed)
        prm = core_params(config, index.ntotal, index.d, len(self._sub), self.max_norm)
        self._k = min(config.k, index.ntotal)
        self._atol = prm["atol"]
        self._pool_size = prm["pool_size"]
        self._max_working = prm["max_working"]
        self._build_row_keys(config.seed)
        self.scan = "exact"
        self.pca_k = 0
        self._pca: PcaBound | None = None
        if config.scan != "exact":
            self._pca = PcaBound.fit(
                self.points, config.scan, config.pca_k, config.pca_residual, config.seed
            )
        if self._pca is not None:
            self.scan, self.pca_k = "pca", self._pca.k
            self.explained_variance = self._pca.explained_variance
        self._scan = RowProducts(self._pca.C if self._pca is not None else self.points, device)
        self.device = self._scan.device
        # the compiled core runs the exact scan's column generation (the PCA scan: numpy)
        core = native_use(config.engine) if self._pca is None else None
        self.engine = "numpy" if core is None else "native"
        self._core = (
            None
            if core is None
            else core.HullCore(
                self.points,
                self._sub,
                self._sub32,
                self._sub_sq,
                prm,
                native_blas(),
            )
        )

    @property
    def dim(self) -> int:
        """d, the feature dimension."""
        return int(self.points.shape[1])

    def __len__(self) -> int:
        """N, the number of training points."""
        return int(self.points.shape[0])

    # ------------------------------------------------------------------------------ building
    def _build_subsample(self, subsample: int | None, seed: int) -> None:
        """The random subsample (S,) the first inner rounds search, its (S, d) float32 rows and
        their (S,) squared norms."""
        self._sub = subsample_indices(len(self), subsample, seed)
        if len(self._sub) == len(self):
            self._sub32 = self.points
        else:
            self._sub32 = np.ascontiguousarray(self.points[self._sub])
        self._sub_sq = np.einsum("ij,ij->i", self._sub32, self._sub32)

    def _build_row_keys(self, seed: int) -> None:
        """Exact training-point queries (distance 0) are found by a hash of the float32 rows:
        (N,) sorted keys and the row order that sorts them."""
        self._hash_mult = np.random.default_rng(seed + 1).integers(
            1, 2**63, size=self.dim, dtype=np.uint64
        ) | np.uint64(1)
        keys = np.concatenate(
            [self._row_keys(self.points[lo : lo + 8192]) for lo in range(0, len(self), 8192)]
        )
        self._key_order = np.argsort(keys, kind="stable")
        self._keys = keys[self._key_order]

    def _row_keys(self, a32: np.ndarray) -> np.ndarray:
        """(B,) uint64 hash keys of the (B, d) float32 rows ``a32``."""
        u = (a32 + np.float32(0)).view(np.uint32).astype(np.uint64)  # + 0 maps -0 to +0
        return (u * self._hash_mult).sum(axis=1, dtype=np.uint64)

    def _training_point(self, q: np.ndarray) -> int:
        """Index of a training point equal to ``q`` (d,) float64, or -1."""
        q32 = q.astype(np.float32)
        if not np.array_equal(q32.astype(np.float64), q):
            return -1
        key = self._row_keys(q32[None])[0]
        lo = np.searchsorted(self._keys, key, side="left")
        hi = np.searchsorted(self._keys, key, side="right")
        for j in self._key_order[lo:hi]:
            if np.array_equal(self.points[j], q32):
                return int(j)
        return -1

    def _certified_max(
        self, v32: np.ndarray, g: np.ndarray, g32: np.ndarray, rows: np.ndarray | None = None
    ) -> float:
        """Exact ``max_t g.t`` (plus a float64 rounding slack) over the training points ``rows``
        (R,) (all N when None) from their float32 values ``v32 = T[rows] g32`` (R,) plus a
        float64 re-check; ``g`` (d,) float64, ``g32`` its float32 copy."""
        d = self.dim
        gamma = d * _U32 / (1 - d * _U32)
        # |fl32(g32.t) - g.t| <= (gamma ||g32|| + ||g - g32||) ||t|| =: err_t <= err (Higham 3.5)
        g32_64 = g32.astype(np.float64)
        err = (
            gamma * float(np.linalg.norm(g32_64)) + float(np.linalg.norm(g - g32_64))
        ) * self.max_norm
        # Only points whose float32 value is within 2 err (+ float32 rounding of the comparison
        # itself) of the float32 maximum can hold the true maximum: re-evaluate those in float64.
        top = float(v32.max())
        cut = top - 2.0 * err - 4.0 * _U32 * abs(top)
        cand = np.flatnonzero(v32 >= cut)
        if rows is not None:
            cand = rows[cand]
        exact = self.points[cand].astype(np.float64) @ g
        # float64 rounding of the re-check itself
        slack = d * _U64 / (1 - d * _U64) * float(np.linalg.norm(g)) * self.max_norm
        return float(exact.max()) + slack

    # -------------------------------------------------------------------------------- queries
    def query(
        self, queries: np.ndarray, *, top_support: int = 8, progress: bool = False
    ) -> HullDistances:
        """Certified distance of every row of ``queries`` (n, d) to the hull of the training
        points; ``top_support`` weights per query are reported."""
        Q = np.asarray(queries, dtype=np.float64)
        if Q.ndim != 2 or Q.shape[1] != self.dim:
            raise GeometryError(f"expected queries (N, {self.dim}), got {Q.shape}")
        if not np.all(np.isfinite(Q)):
            raise GeometryError("queries contain NaN or Inf")
        if self._core is not None:
            return self._query_native(Q, top_support, progress)
        n_q = Q.shape[0]
        upper = np.zeros(n_q)
        lower = np.zeros(n_q)
        proj = np.zeros_like(Q)
        rounds = np.zeros(n_q, dtype=np.int64)
        qp = np.zeros(n_q, dtype=np.int64)
        frac = np.zeros(n_q)
        converged = np.zeros(n_q, dtype=bool)
        sup_idx = np.full((n_q, top_support), -1, dtype=np.int64)
        sup_alpha = np.zeros((n_q, top_support))
        block = query_block(len(self))
        with progress_bar(total=n_q, desc="hull distance", enabled=progress) as bar:
            for lo in range(0, n_q, block):
                hi = min(lo + block, n_q)
                for qi, res in enumerate(self._query_block(Q[lo:hi]), start=lo):
                    upper[qi], lower[qi], proj[qi] = res.upper, res.lower, res.projection
                    rounds[qi], converged[qi] = res.rounds, res.converged
                    qp[qi], frac[qi] = res.qp_solves, res.exact_fraction
                    idx, alpha = res.support(top_support)
                    sup_idx[qi, : len(idx)] = idx
                    sup_alpha[qi, : len(idx)] = alpha
                bar.update(hi - lo)
        return HullDistances(upper, lower, proj, sup_idx, sup_alpha, rounds, converged, qp, frac)

    def _query_native(self, Q: np.ndarray, top_support: int, progress: bool) -> HullDistances:
        """:meth:`query` by the compiled core (:mod:`guard.geometry.native`): one call per block
        of queries, each full round one GEMM over all training points for the block's open
        queries."""
        n_q, d = Q.shape
        out = result_arrays(Q, top_support)
        known = self._training_points(Q)
        hit = known >= 0
        if top_support > 0:
            out["support_idx"][hit, 0] = known[hit]
            out["support_alpha"][hit, 0] = 1.0
        scan = None if self.device == "cpu" else self._scan  # the CPU: BLAS inside the core
        assert self._core is not None
        rows = np.flatnonzero(~hit)
        return query_core(self._core, len(self), Q, rows, out, scan, top_support, progress)

    def _training_points(self, Q: np.ndarray) -> np.ndarray:
        """(n,) index of a training point equal to each row of ``Q`` (n, d) float64, or -1
        (vectorised :meth:`_training_point`)."""
        Q32 = Q.astype(np.float32)
        found = np.full(len(Q), -1, dtype=np.int64)
        exact = np.flatnonzero((Q32.astype(np.float64) == Q).all(axis=1))
        if len(exact) == 0:
            return found
        keys = self._row_keys(Q32[exact])
        lo = np.searchsorted(self._keys, keys, side="left")
        hi = np.searchsorted(self._keys, keys, side="right")
        for r in np.flatnonzero(hi > lo):  # only queries whose hash matches a training point
            for j in self._key_order[lo[r] : hi[r]]:
                if np.array_equal(self.points[j], Q32[exact[r]]):
                    found[exact[r]] = j
                    break
        return found

    def _query_block(self, Q: np.ndarray) -> list[_QueryResult]:
        """One result per row of the block ``Q`` (B, d): training points at once, the others by
        column generation, the open queries of a block sharing each full round's scan."""
        start = time.perf_counter()
        done: dict[int, _QueryResult] = {}
        rows = []
        for qi, q in enumerate(Q):
            t = self._training_point(q)
            if t >= 0:
                done[qi] = _QueryResult.training_point(q, t)
            else:
                rows.append(qi)
        active = self._start(Q, rows)
        n_full = 0
        while active:
            n_full += 1
            active = self._round(active, n_full, start, done)
        return [done[qi] for qi in range(len(Q))]

    def _start(self, Q: np.ndarray, rows: list[int]) -> list[_Query]:
        """The state of the queries ``Q[rows]`` (``Q``: (B, d)): first working set = the
        nearest points of the subsample, which is also their first pool."""
        if not rows:
            return []
        k0 = min(self._k, 16, len(self._sub))
        # (S, len(rows)): ||t - q||^2 - ||q||^2, which orders t as the distance does
        D = self._sub32 @ Q[rows].astype(np.float32).T
        D *= -2.0
        D += self._sub_sq[:, None]
        mark = np.zeros(len(self), dtype=bool)  # scratch: membership in a working set
        out = []
        for a, qi in enumerate(rows):
            col = D[:, a]
            near = np.argpartition(col, k0 - 1)[:k0] if k0 < len(col) else np.arange(len(col))
            out.append(_Query(qi, Q[qi], self._sub[near], self._sub, self._sub32, mark))
        return out

    def _round(
        self, active: list[_Query], n_full: int, start: float, done: dict[int, _QueryResult]
    ) -> list[_Query]:
        """Round ``n_full`` of the ``active`` queries: inner rounds on their pools, then one
        full round (a scan over all N points) for those not yet inside. Finished queries go to
        ``done`` (by row); returns those still open."""
        cfg = self.config
        for st in active:
            self._inner(st)
        out_of_budget = n_full >= cfg.max_rounds or (
            cfg.time_budget_s is not None and time.perf_counter() - start > cfg.time_budget_s
        )
        todo = []
        for st in active:
            if st.up <= self._atol:  # inside the hull: no full round needed
                done[st.row] = st.result(0.0, n_full - 1, True, len(self))
            else:
                todo.append(st)
        if not todo:
            return []
        V, H = self._scan_all(todo)
        still = []
        for a, st in enumerate(todo):
            if H is None:
                low, converged = self._full_exact(st, V[a])
            else:
                low, converged = self._full_pca(st, V[a], H[a], out_of_budget)
            if converged is None:  # no violator left to add: the inner solve limits the gap
                done[st.row] = st.result(low, n_full, False, len(self))
            elif converged or out_of_budget:
                done[st.row] = st.result(low, n_full, converged, len(self))
            else:
                still.append(st)
        return still

    def _scan_all(self, todo: list[_Query]) -> tuple[np.ndarray, np.ndarray | None]:
        """The full-round scan of the queries ``todo`` (B of them): (B, N) float32 values
        ``T g32`` (exact scan) or PCA estimates ``C fl32(U^T g)``, and (B, k) ``U^T g`` (None for
        the exact scan)."""
        G = np.stack([st.g for st in todo])
        if self._pca is None:
            return self._scan(G.astype(np.float32)), None
        H = G @ self._pca.U
        return self._scan(H.astype(np.float32)), H

    # --------------------------------------------------------------------------- inner rounds
    def _inner(self, st: _Query) -> None:
        """Column generation of one query on its pool: no certificate, cheap rounds."""
        tol, atol = self.config.tol, self._atol
        for it in range(_MAX_INNER):
            S = self.points[st.ws].astype(np.float64)
            # the first QP of a query has no multipliers to warm-start from
            st.alpha, st.dual = min_norm_point_warm(S - st.q, st.dual if st.qp else None)
            st.qp += 1
            st.p = st.alpha @ S
            st.g = st.q - st.p
            st.up = float(np.linalg.norm(st.g))
            # (below atol the query counts as inside, but keep going while it is cheap)
            if st.up <= 1e-6 * atol or it == _MAX_INNER - 1:
                return
            # aim at half the tolerance so that the full round usually certifies at once
            thr = float(st.g @ st.q) - (1.0 - 0.5 * tol) * st.up * st.up
            # below float32 resolution every point that might violate is a candidate
            thr -= 2.0 * self.dim * _U32 * st.up * self.max_norm
            v = st.pool32 @ st.g.astype(np.float32)
            viol = np.flatnonzero(v > thr)
            if len(viol) == 0 or not self._add(st, st.pool[viol], v[viol]):
                return

    def _add(self, st: _Query, idx: np.ndarray, vals: np.ndarray) -> bool:
        """Add the (at most ``add_per_round``) largest violators ``idx`` (n,) with values
        ``vals`` (n,) along g not yet in the working set; False when there is none."""
        mark = st.mark
        mark[st.ws] = True
        new = ~mark[idx]
        mark[st.ws] = False
        idx, vals = idx[new], vals[new]
        if len(idx) == 0:
            return False
        m = self.config.add_per_round
        if len(idx) > m:
            idx = idx[np.argpartition(vals, len(idx) - m)[len(idx) - m :]]
        # Keep the whole working set while it is small (no cycling); past the cap keep only the
        # current support, which still contains the optimum's support.
        keep = np.ones(len(st.ws), dtype=bool) if len(st.ws) < self._max_working else st.alpha > 0
        st.ws = np.concatenate([st.ws[keep], idx])
        st.dual = np.concatenate([st.dual[keep], np.zeros(len(idx))])
        return True

    def _set_pool(self, st: _Query, idx: np.ndarray) -> None:
        st.pool = idx
        st.pool32 = np.take(self.points, idx, axis=0)

    # ---------------------------------------------------------------------------- full rounds
    # A full round returns (lower, converged): converged is True when the gap closed, False
    # when violators joined the working set (another round may close it), None when none is
    # left to add (the gap cannot close further).
    def _lower(self, st: _Query, m: float) -> tuple[float, bool]:
        """The lower bound from ``m >= max_t g.t`` and whether it closes the gap."""
        low = min(max((float(st.g @ st.q) - m) / st.up, 0.0), st.up)
        return low, st.up - low <= self.config.tol * st.up

    def _violators(self, st: _Query, idx: np.ndarray, vals: np.ndarray) -> bool | None:
        """Hand the points ``idx`` (n,) (float32 values ``vals`` (n,) along g) to the next inner
        rounds: they become the pool and their violators join the working set. None when none
        is left (the gap cannot close further)."""
        self._set_pool(st, idx)
        gp = float(st.g @ st.p)
        viol = vals > gp
        return False if self._add(st, idx[viol], vals[viol]) else None

    def _full_exact(self, st: _Query, v: np.ndarray) -> tuple[float, bool | None]:
        """Full round by the exact float32 scan ``v = T g32`` (N,)."""
        st.evals += len(v)
        low, done = self._lower(st, self._certified_max(v, st.g, st.g.astype(np.float32)))
        if done:
            return low, True
        top = _top_indices(v, self._pool_size)
        res = self._violators(st, top, v[top])
        return low, res

    def _pca_bound(
        self, g: np.ndarray, h: np.ndarray, z: np.ndarray, theta: float, cap: int | None = None
    ) -> PcaMax:
        """:meth:`guard.geometry.hull_pca.PcaBound.bound` with this index's exact evaluation."""
        if self._pca is None:
            raise GeometryError("the PCA bound needs an index whose scan is 'pca'")
        pca = self._pca
        g32 = g.astype(np.float32)

        def exact(rows: np.ndarray) -> tuple[np.ndarray, float]:
            x = np.take(self.points, rows, axis=0) @ g32
            return x, self._certified_max(x, g, g32, rows=rows)

        return pca.bound(g, h, z, theta, exact, cap)

    def max_along(self, g: np.ndarray) -> float:
        """Certified ``max_t g.t`` over all training points for ``g`` (d,): the exact maximum
        plus at most a float64 rounding slack (``>=`` the true maximum). Uses the index's
        full-round scan."""
        g = np.asarray(g, dtype=np.float64)
        g32 = g.astype(np.float32)
        if self._pca is None:
            return self._certified_max(self.points @ g32, g, g32)
        h = g @ self._pca.U
        z = self._pca.C @ h.astype(np.float32)
        # threshold: the best exact value among the points with the largest estimates
        top = _top_indices(z, 32)
        theta = float((self.points[top].astype(np.float64) @ g).max())
        b = self._pca_bound(g, h, z, theta)
        return b.bound_all if b.m is None else b.m  # (m is None only past a cap: none here)

    def _full_pca(
        self, st: _Query, z: np.ndarray, h: np.ndarray, out_of_budget: bool
    ) -> tuple[float, bool | None]:
        """Full round by the PCA-bounded scan ``z = C fl32(U^T g)`` (N,), ``h = U^T g`` (k,)."""
        g, up = st.g, st.up
        # target: m <= theta closes the gap (with 10% of tol to spare for the rounding)
        theta = float(g @ st.q) - (1.0 - 0.9 * self.config.tol) * up * up
        b = self._pca_bound(g, h, z, theta, cap=len(self) // 4)
        if b.m is not None:
            st.evals += len(b.candidates)
            low, done = self._lower(st, b.m)
            if done or out_of_budget or len(b.candidates) == 0:
                return low, done
            top = _top_indices(b.values, self._pool_size)
            return low, self._violators(st, b.candidates[top], b.values[top])
        if out_of_budget:
            return self._lower(st, b.bound_all)
        if st.pool is not self._sub or len(self._sub) == len(self):
            # the inner rounds already searched a pool from a full round: g is probably near
            # the optimum and the PCA bound too loose here; the exact scan certifies
            return self._full_exact(st, self.points @ g.astype(np.float32))
        # First full round, too many candidates to certify (g is still far from optimal):
        # violators from the points with the largest PCA estimates, checked exactly.
        top = _top_indices(z, self._pool_size)
        x = np.take(self.points, top, axis=0) @ g.astype(np.float32)
        st.evals += len(top)
        if self._violators(st, top, x) is not None:
            return 0.0, False
        # no new violator there: fall back to the exact scan for this query
        return self._full_exact(st, self.points @ g.astype(np.float32))


def query_block(n_points: int) -> int:
    """Queries per call of a compiled core over ``n_points`` training points: one float32 GEMM
    scans a block's open queries, its products within ~64 MB."""
    return max(1, min(256, (64 << 20) // (4 * n_points)))


def query_core(
    core: Any,
    n_points: int,
    Q: np.ndarray,
    rows: np.ndarray,
    out: dict[str, np.ndarray],
    scan: Any,
    top_support: int,
    progress: bool,
) -> HullDistances:
    """The answers of the compiled ``core`` (over ``n_points`` training points) for the
    queries ``Q[rows]`` (``Q``: (n, d) float64), written into ``out`` (:func:`result_arrays` of
    ``Q``; its other rows as given); one call per block of queries (:func:`query_block`), with a
    progress bar over all n."""
    block = query_block(n_points)
    with progress_bar(total=len(Q), desc="hull distance", enabled=progress) as bar:
        bar.update(len(Q) - len(rows))
        for lo in range(0, len(rows), block):
            sel = rows[lo : lo + block]
            res = core.query(np.ascontiguousarray(Q[sel]), scan, top_support)
            for key, arr in out.items():
                arr[sel] = res[key]
            bar.update(len(sel))
    return HullDistances(**out)


def subsample_indices(n: int, size: int | None, seed: int) -> np.ndarray:
    """The sorted training indices (S,) of the random subsample of ``size`` (``None``:
    :data:`SUBSAMPLE`; all ``n`` when that many or more) that the first inner rounds search."""
    size = int(min(SUBSAMPLE if size is None else size, n))
    if size >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size, replace=False))


def core_params(config: HullConfig, n: int, d: int, n_sub: int, max_norm: float) -> dict:
    """The compiled core's settings for ``n`` training points of dimension ``d`` (largest norm
    ``max_norm``) with a subsample of ``n_sub``: ``config`` with the data-dependent values of
    :class:`ConvexHullIndex` (the sizes clipped to ``n``, ``atol`` scaled by the norms)."""
    k = min(config.k, n)
    return {
        "k0": min(k, 16, n_sub),
        "tol": config.tol,
        "atol": config.atol * max(max_norm, 1.0),
        "max_norm": max_norm,
        "max_rounds": config.max_rounds,
        "add_per_round": config.add_per_round,
        "pool_size": max(config.pool_size, config.add_per_round),
        "max_working": max(4 * d, 2 * k),
        "max_inner": _MAX_INNER,
        "time_budget_s": -1.0 if config.time_budget_s is None else config.time_budget_s,
    }


def result_arrays(Q: np.ndarray, top_support: int) -> dict[str, np.ndarray]:
    """The fields of :class:`HullDistances` for the queries ``Q`` (n, d) before any is answered
    (what the compiled core's results are written into)."""
    n_q = len(Q)
    return {
        "upper": np.zeros(n_q),
        "lower": np.zeros(n_q),
        "projection": Q.copy(),
        "support_idx": np.full((n_q, top_support), -1, dtype=np.int64),
        "support_alpha": np.zeros((n_q, top_support)),
        "rounds": np.zeros(n_q, dtype=np.int64),
        "converged": np.ones(n_q, dtype=bool),
        "qp_solves": np.zeros(n_q, dtype=np.int64),
        "exact_fraction": np.zeros(n_q),
    }
