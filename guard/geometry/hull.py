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
    (:mod:`guard.hull_pca`) excludes most points; only those it cannot exclude are evaluated
    exactly. ``M`` is then a rigorous upper bound on ``max_t g.t``, tight enough to close the
    gap to ``tol``.
  ``"exact"`` is the default (it holds nothing beyond the features); ``"pca"`` costs k/d of the
  feature matrix in memory (default model: k = 27 of 64, +42%, for 3% lower p50 latency in
  bench/results/hull.md);
  ``"auto"`` picks ``"pca"`` when k <= d/2 principal directions leave at most
  ``pca_residual`` of the variance, else ``"exact"``.

The previous scheme (FAISS kNN working set, a full exact scan every round) is frozen in
``tests/reference/hull_v2.py`` for benchmarks and tests.

At the optimum the supporting hyperplane touches the hull, so the gap closes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import faiss
import numpy as np

from .accel import RowProducts
from .errors import GeometryError
from .floats import U32 as _U32
from .floats import U64 as _U64
from .floats import blocks as _blocks
from .hull_pca import PcaBound
from .progress import progress_bar
from .qp import min_norm_point, min_norm_point_warm



@dataclass(frozen=True)
class HullDistances:
    """Certified hull distances of N queries in d dimensions.

    Attributes:
        upper: (N,) ``||q - p||`` for a point ``p`` of the hull (the reported distance).
        lower: (N,) certified lower bound, ``0 <= lower <= true distance <= upper``.
        projection: (N, d) the point ``p`` (approximate projection of q onto the hull).
        support_idx: (N, K) training indices of the largest weights, -1 padded.
        support_alpha: (N, K) their convex weights (the full weight vector sums to 1).
        rounds: (N,) full rounds (passes over all N training points) used for the query.
        converged: (N,) whether the relative gap reached ``tol`` (or upper <= atol).
        qp_solves: (N,) small QPs solved (full plus inner rounds).
        exact_fraction: (N,) points evaluated exactly in the full rounds, as a fraction of
            ``N * rounds`` (1 for the exact scan; the candidates of the PCA-bounded scan).
    """

    upper: np.ndarray
    lower: np.ndarray
    projection: np.ndarray
    support_idx: np.ndarray
    support_alpha: np.ndarray
    rounds: np.ndarray
    converged: np.ndarray
    qp_solves: np.ndarray | None = None
    exact_fraction: np.ndarray | None = None


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


class _Query:
    """Column-generation state of one query."""

    __slots__ = ("q", "ws", "dual", "pool", "pool32", "alpha", "p", "g", "up", "qp", "evals",
                 "mark")

    def __init__(self, q: np.ndarray, ws: np.ndarray, pool: np.ndarray, pool32: np.ndarray):
        self.q, self.ws, self.dual, self.pool, self.pool32 = q, ws, None, pool, pool32
        self.alpha = self.p = self.g = None
        self.up = np.inf
        self.qp = 0
        self.evals = 0
        self.mark: np.ndarray | None = None  # scratch (N,) bools shared by a block's queries


class ConvexHullIndex:
    """Index of training features answering certified distance-to-hull queries.

    Args:
        points: (N, d) training features, stored as float32 (the model's own precision) in
            the FAISS index; ``None`` when ``index`` is given.
        k: the first working set is the ``min(k, 16)`` nearest points of the subsample.
        tol: target relative gap ``(upper - lower) / upper``.
        atol: absolute distance below which a query counts as inside the hull, relative to the
            largest training-feature norm.
        max_rounds: budget of full rounds (passes over all N points) per query.
        add_per_round: violating points added to the working set per round.
        time_budget_s: optional wall-clock budget for the rounds of one block of queries.
        index: a prebuilt exact FAISS ``IndexFlat`` over the features (e.g. from an artifact).
        scan: how full rounds bound ``max_t g.t``: ``"exact"`` (the default: no memory beyond
            the features), ``"pca"`` (reads N x k principal coefficients instead of N x d and
            evaluates only the points their bound cannot exclude; holds those coefficients,
            k/d of the feature matrix more memory: on the default model 3% faster for +42%)
            or ``"auto"`` (pca where the features are low-rank enough).
        pca_k: principal directions of the PCA-bounded scan (``None``: the fewest leaving at
            most ``pca_residual`` of the variance).
        pca_residual: residual variance fraction targeted by the automatic ``pca_k``.
        pool_size: points a full round hands to the inner rounds.
        subsample: size of the random subsample the first inner rounds search (``None``:
            ``N / 16`` clipped to [2048, 16384], all points when N is below 8192).
        seed: seed of the subsample and of the PCA fit sample.
        device: where full rounds scan (:class:`guard.accel.RowProducts`: ``auto`` = a CUDA
            GPU through torch when present, else the CPU).
    """

    def __init__(
        self,
        points: np.ndarray | None,
        *,
        k: int = 64,
        tol: float = 1e-3,
        atol: float = 1e-7,
        max_rounds: int = 100,
        add_per_round: int = 64,
        time_budget_s: float | None = None,
        index: faiss.Index | None = None,
        scan: str = "exact",
        pca_k: int | None = None,
        pca_residual: float = 0.01,
        pool_size: int = 2048,
        subsample: int | None = None,
        seed: int = 0,
        device: str = "auto",
    ) -> None:
        if index is None:
            points = np.ascontiguousarray(points, dtype=np.float32)
            if points.ndim != 2 or points.shape[0] == 0:
                raise GeometryError(f"expected training features (N, d) with N >= 1, got "
                                 f"{points.shape}")
            if not np.all(np.isfinite(points)):
                raise GeometryError("training features contain NaN or Inf")
            index = faiss.IndexFlatL2(points.shape[1])
            index.add(points)
        if not isinstance(index, faiss.IndexFlat):
            self._owner = index  # downcast_index returns a wrapper that does not own the index
            index = faiss.downcast_index(index)
        if not isinstance(index, faiss.IndexFlat) or index.ntotal == 0:
            raise GeometryError("expected a non-empty exact FAISS IndexFlat over the training features")
        if points is not None and np.shape(points) != (index.ntotal, index.d):
            raise GeometryError(f"index holds {index.ntotal} x {index.d}, points are "
                             f"{np.shape(points)}")
        if not 0 < tol < 1:
            raise GeometryError(f"tol must be in (0, 1), got {tol}")
        if scan not in ("auto", "exact", "pca"):
            raise GeometryError(f"scan must be 'auto', 'exact' or 'pca', got {scan!r}")
        self.index = index
        # The training features live once in memory: a view of the FAISS index's own storage.
        self.points = faiss.rev_swig_ptr(index.get_xb(), index.ntotal * index.d).reshape(
            index.ntotal, index.d)
        self.k = int(min(max(k, 1), index.ntotal))
        self.tol = float(tol)
        self.max_rounds = int(max_rounds)
        self.add_per_round = int(max(add_per_round, 1))
        self.time_budget_s = time_budget_s
        self.max_norm = float(np.sqrt(max(float(np.einsum("ij,ij->i", b, b).max())
                                          for b in _blocks(self.points))))
        self.atol = float(atol) * max(self.max_norm, 1.0)
        self._max_working = max(4 * index.d, 2 * self.k)
        self.pool_size = int(max(pool_size, self.add_per_round))
        self.max_inner = 50
        self.scan = "exact"
        self.pca_k = 0
        self._pca: PcaBound | None = None
        self._build_pool(subsample, seed)
        if scan != "exact":
            self._pca = PcaBound.fit(self.points, scan, pca_k, pca_residual, seed)
        if self._pca is not None:
            self.scan, self.pca_k = "pca", self._pca.k
            self.explained_variance = self._pca.explained_variance
        self._scan = RowProducts(self._pca.C if self._pca is not None else self.points, device)
        self.device = self._scan.device

    @property
    def dim(self) -> int:
        return int(self.points.shape[1])

    def __len__(self) -> int:
        return int(self.points.shape[0])

    # ------------------------------------------------------------------------------ building
    def _build_pool(self, subsample: int | None, seed: int) -> None:
        N = len(self)
        if subsample is None:
            subsample = N if N < 8192 else int(np.clip(N // 16, 2048, 16384))
        subsample = int(min(max(subsample, 1), N))
        if subsample >= N:
            self._sub = np.arange(N)
            self._sub32 = self.points
        else:
            self._sub = np.sort(np.random.default_rng(seed).choice(N, subsample, replace=False))
            self._sub32 = np.ascontiguousarray(self.points[self._sub])
        self._sub_sq = np.einsum("ij,ij->i", self._sub32, self._sub32)
        # Exact training-point queries (distance 0) are found by a hash of the float32 rows.
        self._hash_mult = np.random.default_rng(seed + 1).integers(
            1, 2**63, size=self.dim, dtype=np.uint64) | np.uint64(1)
        keys = np.concatenate([self._row_keys(self.points[lo:lo + 8192])
                               for lo in range(0, N, 8192)])
        self._key_order = np.argsort(keys, kind="stable")
        self._keys = keys[self._key_order]

    def _row_keys(self, a32: np.ndarray) -> np.ndarray:
        u = (a32 + np.float32(0)).view(np.uint32).astype(np.uint64)  # + 0 maps -0 to +0
        return (u * self._hash_mult).sum(axis=1, dtype=np.uint64)

    def _training_point(self, q: np.ndarray) -> int:
        """Index of a training point equal to ``q`` (float64), or -1."""
        q32 = q.astype(np.float32)
        if not np.array_equal(q32.astype(np.float64), q):
            return -1
        key = self._row_keys(q32[None])[0]
        lo, hi = np.searchsorted(self._keys, [key, key], side="left")[0], \
            np.searchsorted(self._keys, key, side="right")
        for j in self._key_order[lo:hi]:
            if np.array_equal(self.points[j], q32):
                return int(j)
        return -1

    def _certified_max(self, v32: np.ndarray, g: np.ndarray, g32: np.ndarray,
                       rows: np.ndarray | None = None) -> float:
        """Exact ``max_t g.t`` (plus a float64 rounding slack) over the training points ``rows``
        (all when None) from their float32 values ``v32 = T[rows] g32`` plus a float64 re-check."""
        d = self.dim
        gamma = d * _U32 / (1 - d * _U32)
        # |fl32(g32.t) - g.t| <= (gamma ||g32|| + ||g - g32||) ||t|| =: err_t <= err (Higham 3.5)
        g32_64 = g32.astype(np.float64)
        err = (gamma * float(np.linalg.norm(g32_64)) + float(np.linalg.norm(g - g32_64))) * \
            self.max_norm
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

    def query(
        self, queries: np.ndarray, *, top_support: int = 8, progress: bool = False
    ) -> HullDistances:
        """Certified distance of every row of ``queries`` to the hull of the training points."""
        Q = np.asarray(queries, dtype=np.float64)
        if Q.ndim != 2 or Q.shape[1] != self.dim:
            raise GeometryError(f"expected queries (N, {self.dim}), got {Q.shape}")
        if not np.all(np.isfinite(Q)):
            raise GeometryError("queries contain NaN or Inf")
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
        # Queries are processed in blocks so one float32 GEMM scans the block (<= ~64 MB).
        block = max(1, min(256, (64 << 20) // (4 * len(self))))
        with progress_bar(total=n_q, desc="hull distance", enabled=progress) as bar:
            for lo in range(0, n_q, block):
                hi = min(lo + block, n_q)
                res = self._query_block_pool(Q[lo:hi])
                for r, (u, low, p, ws, alpha, nr, conv, nqp, fr) in enumerate(res):
                    qi = lo + r
                    upper[qi], lower[qi], proj[qi], rounds[qi], converged[qi] = u, low, p, nr, conv
                    qp[qi], frac[qi] = nqp, fr
                    order = np.argsort(-alpha, kind="stable")[:top_support]
                    order = order[alpha[order] > 0]
                    sup_idx[qi, : len(order)] = ws[order]
                    sup_alpha[qi, : len(order)] = alpha[order]
                bar.update(hi - lo)
        return HullDistances(upper, lower, proj, sup_idx, sup_alpha, rounds, converged, qp, frac)

    # ----------------------------------------------------------------------- pool algorithm
    def _query_block_pool(self, Q: np.ndarray) -> list[tuple]:
        start = time.perf_counter()
        state: list[tuple | None] = [None] * len(Q)
        active: list[tuple[int, _Query]] = []
        for qi, q in enumerate(Q):
            t = self._training_point(q)
            if t >= 0:
                state[qi] = (0.0, 0.0, q.copy(), np.array([t]), np.ones(1), 0, True, 0, 0.0)
            else:
                active.append((qi, None))
        if active:
            # First working set: the nearest points of the subsample.
            k0 = min(self.k, 16, len(self._sub))
            idx = [qi for qi, _ in active]
            D = self._sub32 @ Q[idx].astype(np.float32).T
            D *= -2.0
            D += self._sub_sq[:, None]
            for a, qi in enumerate(idx):
                col = D[:, a]
                near = np.argpartition(col, k0 - 1)[:k0] if k0 < len(col) else np.arange(len(col))
                active[a] = (qi, _Query(Q[qi], self._sub[near], self._sub, self._sub32))
            del D
        mark = np.zeros(len(self), dtype=bool)  # scratch: membership in a working set
        for _, st in active:
            st.mark = mark
        n_full = 0
        while active:
            for _, st in active:
                self._inner(st)
            n_full += 1
            out_of_budget = n_full >= self.max_rounds or (
                self.time_budget_s is not None and time.perf_counter() - start > self.time_budget_s
            )
            todo = []
            for qi, st in active:
                if st.up <= self.atol:
                    state[qi] = (st.up, 0.0, st.p, st.ws, st.alpha, n_full - 1, True, st.qp,
                                 st.evals / max(len(self) * (n_full - 1), 1))
                else:
                    todo.append((qi, st))
            if not todo:
                break
            G = np.stack([st.g for _, st in todo])
            if self.scan == "pca":
                H = G @ self._pca.U
                V = self._scan(H.astype(np.float32))  # (B, N): the PCA-bounded scan
            else:
                H = None
                V = self._scan(G.astype(np.float32))  # (B, N): the exact scan
            still = []
            for a, (qi, st) in enumerate(todo):
                if H is None:
                    low, done = self._full_exact(st, V[a])
                else:
                    low, done = self._full_pca(st, V[a], H[a], out_of_budget)
                if done is None:  # no violator left to add: the inner solve limits the gap
                    done, out = False, True
                else:
                    out = done or out_of_budget
                if out:
                    state[qi] = (st.up, low, st.p, st.ws, st.alpha, n_full, done, st.qp,
                                 st.evals / (len(self) * n_full))
                else:
                    still.append((qi, st))
            active = still
        return state  # type: ignore[return-value]

    def _inner(self, st: _Query) -> None:
        """Column generation of one query on its pool: no certificate, cheap rounds."""
        for it in range(self.max_inner):
            S = self.points[st.ws].astype(np.float64)
            st.alpha, st.dual = min_norm_point_warm(S - st.q, st.dual)
            st.qp += 1
            st.p = st.alpha @ S
            st.g = st.q - st.p
            st.up = float(np.linalg.norm(st.g))
            # (below atol the query counts as inside, but keep going while it is cheap)
            if st.up <= 1e-6 * self.atol or it == self.max_inner - 1:
                return
            # aim at half the tolerance so that the full round usually certifies at once
            thr = float(st.g @ st.q) - (1.0 - 0.5 * self.tol) * st.up * st.up
            # below float32 resolution every point that might violate is a candidate
            thr -= 2.0 * self.dim * _U32 * st.up * self.max_norm
            v = st.pool32 @ st.g.astype(np.float32)
            viol = np.flatnonzero(v > thr)
            if len(viol) == 0 or not self._add(st, st.pool[viol], v[viol]):
                return

    def _add(self, st: _Query, idx: np.ndarray, vals: np.ndarray) -> bool:
        """Add the (at most ``add_per_round``) largest violators ``idx`` not yet in the working
        set; False when there is none."""
        mark = st.mark
        mark[st.ws] = True
        new = ~mark[idx]
        mark[st.ws] = False
        idx, vals = idx[new], vals[new]
        if len(idx) == 0:
            return False
        m = self.add_per_round
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

    def _lower(self, st: _Query, m: float) -> tuple[float, bool]:
        low = min(max((float(st.g @ st.q) - m) / st.up, 0.0), st.up)
        return low, st.up - low <= self.tol * st.up

    def _violators(self, st: _Query, idx: np.ndarray, vals: np.ndarray) -> bool | None:
        """Hand the points ``idx`` (float32 values ``vals`` along g) to the next inner rounds:
        they become the pool and their violators join the working set. None when none is left
        (the gap cannot close further)."""
        self._set_pool(st, idx)
        gp = float(st.g @ st.p)
        viol = vals > gp
        return False if self._add(st, idx[viol], vals[viol]) else None

    def _full_exact(self, st: _Query, v: np.ndarray) -> tuple[float, bool | None]:
        """Full round by the exact float32 scan ``v = T g32``."""
        st.evals += len(v)
        low, done = self._lower(st, self._certified_max(v, st.g, st.g.astype(np.float32)))
        if done:
            return low, True
        top = _top_indices(v, self.pool_size)
        res = self._violators(st, top, v[top])
        return low, res

    def _pca_bound(self, g: np.ndarray, h: np.ndarray, z: np.ndarray, theta: float,
                   cap: int | None = None) -> tuple[float | None, np.ndarray, np.ndarray, float]:
        """:meth:`guard.hull_pca.PcaBound.bound` with this index's exact evaluation."""
        g32 = g.astype(np.float32)

        def exact(rows: np.ndarray) -> tuple[np.ndarray, float]:
            x = np.take(self.points, rows, axis=0) @ g32
            return x, self._certified_max(x, g, g32, rows=rows)

        return self._pca.bound(g, h, z, theta, exact, cap)

    def max_along(self, g: np.ndarray) -> float:
        """Certified ``max_t g.t`` over all training points: the exact maximum plus at most a
        float64 rounding slack (``>= `` the true maximum). Uses the index's full-round scan."""
        g = np.asarray(g, dtype=np.float64)
        g32 = g.astype(np.float32)
        if self.scan != "pca":
            return self._certified_max(self.points @ g32, g, g32)
        h = g @ self._pca.U
        z = self._pca.C @ h.astype(np.float32)
        # threshold: the best exact value among the points with the largest estimates
        top = _top_indices(z, 32)
        theta = float((self.points[top].astype(np.float64) @ g).max())
        return self._pca_bound(g, h, z, theta)[0]

    def _full_pca(self, st: _Query, z: np.ndarray, h: np.ndarray,
                  out_of_budget: bool) -> tuple[float, bool | None]:
        """Full round by the PCA-bounded scan ``z = C fl32(U^T g)``."""
        g, up = st.g, st.up
        # target: m <= theta closes the gap (with 10% of tol to spare for the rounding)
        theta = float(g @ st.q) - (1.0 - 0.9 * self.tol) * up * up
        m, cand, x, bound_all = self._pca_bound(g, h, z, theta, cap=len(self) // 4)
        if m is not None:
            st.evals += len(cand)
            low, done = self._lower(st, m)
            if done or out_of_budget or len(cand) == 0:
                return low, done
            top = _top_indices(x, self.pool_size)
            return low, self._violators(st, cand[top], x[top])
        if out_of_budget:
            return self._lower(st, bound_all)
        if st.pool is not self._sub or len(self._sub) == len(self):
            # the inner rounds already searched a pool from a full round: g is probably near
            # the optimum and the PCA bound too loose here; the exact scan certifies
            return self._full_exact(st, self.points @ g.astype(np.float32))
        # First full round, too many candidates to certify (g is still far from optimal):
        # violators from the points with the largest PCA estimates, checked exactly.
        top = _top_indices(z, self.pool_size)
        x = np.take(self.points, top, axis=0) @ g.astype(np.float32)
        st.evals += len(top)
        if self._violators(st, top, x) is not None:
            return 0.0, False
        # no new violator there: fall back to the exact scan for this query
        return self._full_exact(st, self.points @ g.astype(np.float32))
