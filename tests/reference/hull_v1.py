"""FROZEN COPY of the project's first hull-distance implementation (commit c510456), kept only
as the benchmark baseline "first version" of issue 5. Not used by the product.

Original docstring: certified distance to the convex hull of the training features (eq. 20-25).

For a query ``q`` the distance to ``conv(T)`` of N training features is computed by column
generation with a certificate:

1. FAISS returns the ``k`` nearest training points: the first working set ``S``.
2. The small QP ``min ||q - S^T a||  s.t.  a >= 0, sum(a) = 1`` is solved exactly on ``S``
   (:func:`min_norm_point`). ``p = S^T a`` lies in the hull, so ``||q - p||`` is an **upper bound**.
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
        rounds: (N,) exact scans over all training points used for the query.
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


class ConvexHullIndex:
    """Index of training features answering certified distance-to-hull queries.

    Args:
        points: (N, d) training features; stored as float32 (the model's own precision).
        k: nearest neighbours from FAISS forming the first working set.
        tol: target relative gap ``(upper - lower) / upper``.
        atol: absolute distance below which a query counts as inside the hull, relative to the
            largest training-feature norm.
        max_rounds: budget of exact scans per query.
        add_per_round: violating points added to the working set per round.
        time_budget_s: optional wall-clock budget for the rounds of one block of queries.
        index: a prebuilt exact FAISS L2 index over ``points`` (e.g. loaded from an artifact).
    """

    def __init__(
        self,
        points: np.ndarray,
        *,
        k: int = 64,
        tol: float = 1e-3,
        atol: float = 1e-7,
        max_rounds: int = 100,
        add_per_round: int = 16,
        time_budget_s: float | None = None,
        index: faiss.Index | None = None,
    ) -> None:
        points = np.ascontiguousarray(points, dtype=np.float32)
        if points.ndim != 2 or points.shape[0] == 0:
            raise InputError(f"expected training features (N, d) with N >= 1, got {points.shape}")
        if not np.all(np.isfinite(points)):
            raise InputError("training features contain NaN or Inf")
        if not 0 < tol < 1:
            raise InputError(f"tol must be in (0, 1), got {tol}")
        self.points = points
        self.k = int(min(max(k, 1), points.shape[0]))
        self.tol = float(tol)
        self.max_rounds = int(max_rounds)
        self.add_per_round = int(add_per_round)
        self.time_budget_s = time_budget_s
        self.norms = np.linalg.norm(points.astype(np.float64), axis=1)
        self.atol = float(atol) * max(float(self.norms.max()), 1.0)
        self._max_working = max(4 * points.shape[1], 2 * self.k)
        if index is None:
            index = faiss.IndexFlatL2(points.shape[1])
            index.add(points)
        if index.ntotal != points.shape[0] or index.d != points.shape[1]:
            raise InputError(f"index holds {index.ntotal} x {index.d}, points are {points.shape}")
        self.index = index

    @property
    def dim(self) -> int:
        return int(self.points.shape[1])

    def __len__(self) -> int:
        return int(self.points.shape[0])

    def _certified_max(self, v32: np.ndarray, g: np.ndarray, g32: np.ndarray) -> float:
        """Exact ``max_t g.t`` from the float32 scan ``v32 = T g32`` plus a float64 re-check."""
        d = self.dim
        gamma = d * _U32 / (1 - d * _U32)
        # |fl32(g32.t) - g.t| <= (gamma ||g32|| + ||g - g32||) ||t||   (Higham, eq. 3.5)
        c = gamma * float(np.linalg.norm(g32.astype(np.float64))) + float(
            np.linalg.norm(g - g32.astype(np.float64))
        )
        err = c * self.norms
        v = v32.astype(np.float64)
        best_low = float(np.max(v - err))
        cand = np.flatnonzero(v + err >= best_low)
        exact = self.points[cand].astype(np.float64) @ g
        # float64 rounding of the re-check itself
        slack = d * _U64 / (1 - d * _U64) * float(np.linalg.norm(g)) * float(self.norms[cand].max())
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
        work = [np.unique(row[row >= 0]) for row in knn]
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
                alpha = min_norm_point(self.points[ws].astype(np.float64) - Q[qi])
                p = alpha @ self.points[ws].astype(np.float64)
                G[a] = Q[qi] - p
                sols.append((ws, alpha, p))
            G32 = G.astype(np.float32)
            V = self.points @ G32.T  # (N, len(active)) float32: the exact scan
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
                m = self._certified_max(V[:, a], g, G32[a])
                low = max((float(g @ Q[qi]) - m) / up, 0.0)
                low = min(low, up)
                done = up - low <= self.tol * up
                if done or out_of_budget:
                    state[qi] = (up, low, p, ws, alpha, n_rounds, done)
                    continue
                # Add the points that violate the supporting hyperplane {h : g.h <= g.p} most.
                col = V[:, a]
                top = np.argpartition(-col, min(self.add_per_round + len(ws), len(col) - 1))
                top = top[: self.add_per_round + len(ws)]
                top = top[(col[top] > float(g @ p)) & ~np.isin(top, ws)]
                new = top[np.argsort(-col[top], kind="stable")][: self.add_per_round]
                if len(new) == 0:  # nothing left to add: the inner solve limits the gap
                    state[qi] = (up, low, p, ws, alpha, n_rounds, False)
                    continue
                # Keep the whole working set while it is small (no cycling); past the cap keep
                # only the current support, which still contains the optimum's support.
                keep = ws if len(ws) < self._max_working else ws[alpha > 0]
                work[qi] = np.union1d(keep, new)
                still.append(qi)
            active = still
        return state  # type: ignore[return-value]
