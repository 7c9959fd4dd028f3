"""The first version of the union-of-balls membership (FAISS kNN + range search), kept as a
second, independent implementation that ``guard.geometry.regions.UnionOfBalls`` is tested
against."""

from __future__ import annotations

import faiss
import numpy as np

from guard.errors import InputError
from guard.geometry.regions import Regions


def union_membership(
    index: faiss.Index,
    radii: np.ndarray,
    queries: np.ndarray,
    *,
    k: int = 16,
    chunk: int = 64,
) -> Regions:
    """Exact membership of ``queries`` (N, d) in the union of balls ``(x_t, radii[t])``.

    Args:
        index: exact FAISS L2 index over the training features (e.g. ``IndexFlatL2``).
        radii: (n_train,) ball radii ``r_t >= 0`` (inf is not allowed).
    """
    radii = np.asarray(radii, dtype=np.float64)
    Q = np.ascontiguousarray(queries, dtype=np.float32)
    if Q.ndim != 2 or Q.shape[1] != index.d:
        raise InputError(f"expected queries (N, {index.d}), got {Q.shape}")
    if radii.shape != (index.ntotal,) or not np.all(np.isfinite(radii)):
        raise InputError(f"expected {index.ntotal} finite radii, got shape {radii.shape}")
    n = Q.shape[0]
    in_union = np.zeros(n, dtype=bool)
    n_balls = np.zeros(n, dtype=np.int64)
    slack_out = np.full(n, -np.inf)
    best = np.full(n, -1, dtype=np.int64)
    if index.ntotal == 0 or n == 0:
        return Regions(in_union, n_balls, slack_out, best)
    r_max = float(radii.max())
    k = min(k, index.ntotal)
    for lo in range(0, n, chunk):
        q = Q[lo : lo + chunk]
        d2, nn = index.search(q, k)
        s_knn = (radii[nn] - np.sqrt(np.maximum(d2, 0))).max(axis=1)
        # Every containing ball is within r_max; a ball beating s_knn within r_max - s_knn. One
        # batched range search with the chunk's largest reach; the squared radius is padded so
        # float32 rounding in FAISS cannot drop a boundary point.
        reach = r_max - min(0.0, float(s_knn.min()))
        lims, D, ids = index.range_search(q, reach * reach * (1 + 1e-5) + 1e-12)
        slack = radii[ids] - np.sqrt(np.maximum(D.astype(np.float64), 0.0))
        # FAISS distances are float32: where the sign of a slack could flip, recompute exactly.
        scale = 1e-5 * (1.0 + radii[ids] + np.sqrt(np.maximum(D, 0)))
        near = np.flatnonzero(np.abs(slack) <= scale)
        if len(near):
            rows = np.searchsorted(lims, near, side="right") - 1
            diff = index.reconstruct_batch(ids[near]).astype(np.float64) - q[rows].astype(
                np.float64
            )
            slack[near] = radii[ids[near]] - np.sqrt((diff * diff).sum(axis=1))
        for r in range(q.shape[0]):
            if lims[r + 1] == lims[r]:
                continue
            seg = slice(lims[r], lims[r + 1])
            s_r, id_r = slack[seg], ids[seg]
            row = lo + r
            n_balls[row] = int((s_r > 0).sum())
            in_union[row] = n_balls[row] > 0
            # the largest slack: every candidate within the float32 error of the top, in float64
            cand = np.flatnonzero(s_r >= s_r.max() - 2 * scale[seg].max())
            diff = index.reconstruct_batch(id_r[cand]).astype(np.float64) - q[r].astype(np.float64)
            exact = radii[id_r[cand]] - np.sqrt((diff * diff).sum(axis=1))
            j = int(np.argmax(exact))
            slack_out[row], best[row] = float(exact[j]), int(id_r[cand[j]])
    return Regions(in_union, n_balls, slack_out, best)
