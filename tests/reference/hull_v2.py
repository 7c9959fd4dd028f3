"""FROZEN COPY of the hull-distance implementation before the pool/PCA rewrite (guard/hull.py at
commit a141f67), kept only as the benchmark baseline "previous version" of issue 5. Not used by the
product.

Original docstring: Certified distance to the convex hull of the training features
(paper eq. 20-25).

For a query ``q`` the distance to ``conv(T)`` of N training features is computed by column
generation with a certificate:

1. FAISS returns the ``k`` nearest training points: the first working set ``S``.
2. The small QP ``min ||q - S^T a||  s.t.  a >= 0, sum(a) = 1`` is solved exactly on ``S``
   (:func:`min_norm_point_warm`, warm-started from the previous round's multipliers).
   ``p = S^T a`` lies in the hull, so ``||q - p||`` is an **upper bound**.
3. With ``g = q - p`` an exact scan over **all** N training points gives ``M = max_t g.t``, and
   every point ``h`` of the hull satisfies ``||q - h|| >= (g.q - M) / ||g||``: a **lower bound**.
   The scan runs in float32 (one GEMM for a batch of queries); the few points whose float32 value
   could be the maximum once the rounding-error bound is added are re-evaluated in float64, so
   ``M`` is the exact maximum and the bound is certified despite the float32 arithmetic.
4. If ``(upper - lower) > tol * upper`` the points with the largest ``g.t`` (they violate the
   current supporting hyperplane) join ``S`` and the QP is solved again; repeat until the gap
   closes or the round budget is spent (then ``converged`` is False, the bounds still hold).

At the optimum the supporting hyperplane touches the hull, so the gap closes exactly.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import daqp
import faiss
import numpy as np
from scipy.optimize import nnls

from guard.errors import InputError
from guard.geometry.progress import progress_bar

_U32 = 2.0**-24  # unit roundoff of float32
_U64 = 2.0**-53


@dataclass(frozen=True)
class HullDistances:
    """Certified hull distances of N queries in d dimensions.

    Attributes:
        upper: (N,) ``||q - p||`` for a point ``p`` of the hull (the reported distance).
        lower: (N,) certified lower bound, ``0 <= lower <= true distance <= upper``.
        projection: (N, d) the point ``p`` (approximate projection of q onto the hull).
        support_idx: (N, K) training indices of the largest weights, -1 padded.
        support_alpha: (N, K) their convex weights (the full weight vector sums to 1).
        rounds: (N,) exact scans over all N training points used for the query.
        converged: (N,) whether the relative gap reached ``tol`` (or upper <= atol).
    """

    upper: np.ndarray
    lower: np.ndarray
    projection: np.ndarray
    support_idx: np.ndarray
    support_alpha: np.ndarray
    rounds: np.ndarray
    converged: np.ndarray


def min_norm_point(P: np.ndarray) -> np.ndarray:
    """Convex weights of the point of ``conv(rows of P)`` closest to the origin.

    Solves ``min ||P^T a||`` over the simplex exactly with Lawson-Hanson NNLS: minimising
    ``||P^T v||^2 + (1^T v - 1)^2`` over ``v >= 0`` gives ``v = t a*`` with ``t > 0`` (substitute
    ``v = t a`` and minimise over t: the objective is increasing in ``||P^T a||``).

    Args:
        P: (m, d) points (already shifted so the query is the origin).

    Returns:
        a: (m,) weights, ``a >= 0``, ``sum(a) = 1``.
    """
    scale = float(np.sqrt((P * P).sum(axis=1).max())) or 1.0
    E = np.vstack([P.T / scale, np.ones((1, P.shape[0]))])
    rhs = np.zeros(E.shape[0])
    rhs[-1] = 1.0
    v, _ = nnls(E, rhs, maxiter=50 * E.shape[1])
    total = v.sum()
    if not total > 0:  # cannot happen for m >= 1 (v = e_0 / (1 + |P_0|^2) is better than 0)
        v = np.zeros(P.shape[0])
        v[np.argmin((P * P).sum(axis=1))] = 1.0
        total = 1.0
    return v / total


def min_norm_point_warm(
    P: np.ndarray, dual_start: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Like :func:`min_norm_point`, faster, warm-startable: the dual of the least-distance
    program ``min ||y|| s.t. P y >= 1`` (its solution is ``x* / ||x*||^2``, with multipliers
    proportional to the convex weights) solved by DAQP's dual active-set method.

    Args:
        P: (m, d) points shifted so the query is the origin.
        dual_start: multipliers of a previous solve (0 for new points) to warm-start from.

    Returns:
        (weights a (m,), multipliers (m,)); falls back to NNLS when the origin is in the hull
        (the program is then infeasible).
    """
    m, d = P.shape
    kwargs = {} if dual_start is None else {"dual_start": -dual_start}
    _, _, flag, info = daqp.solve(
        np.eye(d),
        np.zeros(d),
        P,
        np.full(m, 1e30),
        np.ones(m),
        np.zeros(m, dtype=np.int32),
        primal_tol=1e-12,
        dual_tol=1e-14,
        **kwargs,
    )
    lam = np.maximum(-np.asarray(info["lam"]), 0.0) if flag == 1 else None
    if lam is None or not lam.sum() > 0:
        a = min_norm_point(P)
        return a, a
    return lam / lam.sum(), lam


def _blocks(a: np.ndarray, rows: int = 65536):
    """Row blocks of ``a`` as float64 (bounded temporary memory)."""
    for lo in range(0, a.shape[0], rows):
        yield a[lo : lo + rows].astype(np.float64)


class ConvexHullIndex:
    """Index of training features answering certified distance-to-hull queries.

    Args:
        points: (N, d) training features, stored as float32 (the model's own precision) in
            the FAISS index; ``None`` when ``index`` is given.
        k: nearest neighbours from FAISS forming the first working set.
        tol: target relative gap ``(upper - lower) / upper``.
        atol: absolute distance below which a query counts as inside the hull, relative to the
            largest training-feature norm.
        max_rounds: budget of exact scans per query.
        add_per_round: violating points added to the working set per round.
        time_budget_s: optional wall-clock budget for the rounds of one block of queries.
        index: a prebuilt exact FAISS ``IndexFlat`` over the features (e.g. from an artifact).
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
    ) -> None:
        if index is None:
            points = np.ascontiguousarray(points, dtype=np.float32)
            if points.ndim != 2 or points.shape[0] == 0:
                raise InputError(
                    f"expected training features (N, d) with N >= 1, got {points.shape}"
                )
            if not np.all(np.isfinite(points)):
                raise InputError("training features contain NaN or Inf")
            index = faiss.IndexFlatL2(points.shape[1])
            index.add(points)
        if not isinstance(index, faiss.IndexFlat):
            self._owner = index  # downcast_index returns a wrapper that does not own the index
            index = faiss.downcast_index(index)
        if not isinstance(index, faiss.IndexFlat) or index.ntotal == 0:
            raise InputError(
                "expected a non-empty exact FAISS IndexFlat over the training features"
            )
        if points is not None and np.shape(points) != (index.ntotal, index.d):
            raise InputError(
                f"index holds {index.ntotal} x {index.d}, points are {np.shape(points)}"
            )
        if not 0 < tol < 1:
            raise InputError(f"tol must be in (0, 1), got {tol}")
        self.index = index
        # The training features live once in memory: a view of the FAISS index's own storage.
        self.points = faiss.rev_swig_ptr(index.get_xb(), index.ntotal * index.d).reshape(
            index.ntotal, index.d
        )
        self.k = int(min(max(k, 1), index.ntotal))
        self.tol = float(tol)
        self.max_rounds = int(max_rounds)
        self.add_per_round = int(add_per_round)
        self.time_budget_s = time_budget_s
        self.max_norm = float(
            np.sqrt(max(float(np.einsum("ij,ij->i", b, b).max()) for b in _blocks(self.points)))
        )
        self.atol = float(atol) * max(self.max_norm, 1.0)
        self._max_working = max(4 * index.d, 2 * self.k)

    @property
    def dim(self) -> int:
        return int(self.points.shape[1])

    def __len__(self) -> int:
        return int(self.points.shape[0])

    def _certified_max(self, v32: np.ndarray, g: np.ndarray, g32: np.ndarray) -> float:
        """Exact ``max_t g.t`` from the float32 scan ``v32 = T g32`` plus a float64 re-check."""
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
            raise InputError(f"expected queries (N, {self.dim}), got {Q.shape}")
        if not np.all(np.isfinite(Q)):
            raise InputError("queries contain NaN or Inf")
        n_q = Q.shape[0]
        upper = np.zeros(n_q)
        lower = np.zeros(n_q)
        proj = np.zeros_like(Q)
        rounds = np.zeros(n_q, dtype=np.int64)
        converged = np.zeros(n_q, dtype=bool)
        sup_idx = np.full((n_q, top_support), -1, dtype=np.int64)
        sup_alpha = np.zeros((n_q, top_support))
        # Queries are processed in blocks so one float32 GEMM scans the block (<= ~64 MB).
        block = max(1, min(256, (64 << 20) // (4 * len(self))))
        with progress_bar(total=n_q, desc="hull distance", enabled=progress) as bar:
            for lo in range(0, n_q, block):
                hi = min(lo + block, n_q)
                res = self._query_block(Q[lo:hi])
                for r, (u, low, p, ws, alpha, nr, conv) in enumerate(res):
                    qi = lo + r
                    upper[qi], lower[qi], proj[qi], rounds[qi], converged[qi] = u, low, p, nr, conv
                    order = np.argsort(-alpha, kind="stable")[:top_support]
                    order = order[alpha[order] > 0]
                    sup_idx[qi, : len(order)] = ws[order]
                    sup_alpha[qi, : len(order)] = alpha[order]
                bar.update(hi - lo)
        return HullDistances(upper, lower, proj, sup_idx, sup_alpha, rounds, converged)

    def _query_block(self, Q: np.ndarray) -> list[tuple]:
        start = time.perf_counter()
        _, knn = self.index.search(np.ascontiguousarray(Q, dtype=np.float32), self.k)
        # Working sets keep insertion order so the multipliers of one round warm-start the next.
        work = [np.unique(row[row >= 0]) for row in knn]
        duals: list[np.ndarray | None] = [None] * len(Q)
        state: list[tuple | None] = [None] * len(Q)
        active = []
        for qi, row in enumerate(knn):
            t = int(row[0])
            if np.array_equal(self.points[t].astype(np.float64), Q[qi]):  # a training point
                state[qi] = (0.0, 0.0, Q[qi].copy(), np.array([t]), np.ones(1), 0, True)
            else:
                active.append(qi)
        n_rounds = 0
        while active:
            n_rounds += 1
            G = np.zeros((len(active), self.dim))
            sols = []
            for a, qi in enumerate(active):
                ws = work[qi]
                S = self.points[ws].astype(np.float64)
                alpha, duals[qi] = min_norm_point_warm(S - Q[qi], duals[qi])
                p = alpha @ S
                G[a] = Q[qi] - p
                sols.append((ws, alpha, p))
            G32 = G.astype(np.float32)
            V = G32 @ self.points.T  # (len(active), N) float32: the exact scan, rows contiguous
            still = []
            out_of_budget = n_rounds >= self.max_rounds or (
                self.time_budget_s is not None and time.perf_counter() - start > self.time_budget_s
            )
            for a, qi in enumerate(active):
                ws, alpha, p = sols[a]
                g = G[a]
                up = float(np.linalg.norm(g))
                if up <= self.atol:
                    state[qi] = (up, 0.0, p, ws, alpha, n_rounds, True)
                    continue
                m = self._certified_max(V[a], g, G32[a])
                low = min(max((float(g @ Q[qi]) - m) / up, 0.0), up)
                done = up - low <= self.tol * up
                if done or out_of_budget:
                    state[qi] = (up, low, p, ws, alpha, n_rounds, done)
                    continue
                # Add the points that violate the supporting hyperplane {h : g.h <= g.p} most.
                col = V[a]
                viol = np.flatnonzero(col > float(g @ p))  # usually few: no full sort needed
                viol = viol[~np.isin(viol, ws)]
                if len(viol) > self.add_per_round:
                    viol = viol[
                        np.argpartition(-col[viol], self.add_per_round)[: self.add_per_round]
                    ]
                if len(viol) == 0:  # nothing left to add: the inner solve limits the gap
                    state[qi] = (up, low, p, ws, alpha, n_rounds, False)
                    continue
                # Keep the whole working set while it is small (no cycling); past the cap keep
                # only the current support, which still contains the optimum's support.
                keep = np.ones(len(ws), dtype=bool) if len(ws) < self._max_working else alpha > 0
                work[qi] = np.concatenate([ws[keep], viol])
                duals[qi] = np.concatenate([duals[qi][keep], np.zeros(len(viol))])
                still.append(qi)
            active = still
        return state  # type: ignore[return-value]
