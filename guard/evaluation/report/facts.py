"""The paper's facts (section 7) measured on a fitted guard: where test inputs lie relative to
the training hull and the decision boundaries, and what supports their hull projections in
feature space versus pixel space.
"""

from __future__ import annotations

import numpy as np

from ...geometry.hull import ConvexHullIndex, HullConfig
from ...geometry.margins import relaxed_margins
from ...types import Scores


def geometry_facts(s: Scores, y: np.ndarray | None) -> dict[str, float]:
    """Shares of the inputs scored in ``s`` (true labels ``y``; None for OOD sets).

    ``outside_hull`` counts certified distances (lower bound > 0); ``hull_closer`` inputs whose
    hull distance (upper bound) is below the nearest-boundary distance, i.e. the paper's
    ambiguity indicator ``d_min - d_hull`` is positive.
    """
    facts = {
        "n": int(len(s)),
        "outside_hull": float(np.mean(s.hull_lower > 0)),
        "inside_hull": float(np.mean(s.hull_upper <= 0)),
        "hull_closer": float(np.mean(s.hull_upper < s.d_min)),
        "in_union": float(np.mean(s.in_union)),
        "median_d_min": float(np.median(s.d_min)),
        "median_d_hull": float(np.median(s.hull_upper)),
        "share_ambiguous": float(np.mean(s.ambiguity < 0)),
        "hull_converged": float(np.mean(s.hull_converged)),
    }
    if y is not None:
        correct = s.pred == y
        facts |= {
            "accuracy": float(correct.mean()),
            "accuracy_ambiguous": _mean(correct[s.ambiguity < 0]),
            "accuracy_unambiguous": _mean(correct[s.ambiguity >= 0]),
        }
    return facts


def _mean(a: np.ndarray) -> float:
    return float(a.mean()) if a.size else float("nan")


def same_label_share(
    support_idx: np.ndarray,
    support_alpha: np.ndarray,
    y_train: np.ndarray,
    y_query: np.ndarray,
    top: int = 4,
) -> dict[str, float]:
    """How much of the hull support of each query carries the query's label.

    Returns the mean over queries of (a) the convex weight on same-label training points among
    the reported support (normalised by the weight reported) and (b) the share of the ``top``
    largest-weight support points with the query's label (the paper shows the top 4, Fig. 6).
    """
    valid = support_idx >= 0
    same = valid & (y_train[np.maximum(support_idx, 0)] == y_query[:, None])
    w = np.where(valid, support_alpha, 0.0)
    weighted = (np.where(same, w, 0.0).sum(1) / np.maximum(w.sum(1), 1e-300)).mean()
    k = min(top, support_idx.shape[1])
    top_valid = valid[:, :k]
    top_share = same[:, :k].sum() / max(int(top_valid.sum()), 1)
    return {"weighted": float(weighted), f"top{k}": float(top_share)}


def pixel_hull(
    x_train: np.ndarray,
    x_query: np.ndarray,
    *,
    tol: float = 1e-3,
    top_support: int = 8,
    progress: bool = False,
):  # -> HullDistances
    """Certified distances of ``x_query`` to the convex hull of ``x_train`` in pixel space
    (inputs flattened), with the support of each projection (the paper's Fig. 4, 6a)."""
    P = np.ascontiguousarray(x_train.reshape(len(x_train), -1), dtype=np.float32)
    index = ConvexHullIndex(P, HullConfig(k=64, tol=tol, max_rounds=500))
    Q = x_query.reshape(len(x_query), -1).astype(np.float32)
    return index.query(Q, top_support=top_support, progress=progress)


def margin_table(guard, s: Scores, i: int, features: np.ndarray) -> dict:
    """The paper's Table 1 for input ``i`` of ``s`` (``features``: its feature vector): the
    exact distance to every class's decision boundary next to the closed-form hyperplane
    distance (a lower bound), and the training features inside the ball ``B(x)`` of guaranteed
    classification (eq. 13)."""
    x = np.asarray(features, dtype=np.float64)[None, :]
    pred = np.array([int(s.pred[i])])
    closed = relaxed_margins(x, guard.W_, guard.b_, pred, nonneg=False, orthant=False)[0][0]
    d2 = ((guard.train_features_.astype(np.float64) - x) ** 2).sum(axis=1)
    return {
        "index": int(i),
        "pred": int(s.pred[i]),
        "margins": s.margins[i].tolist(),
        "closed_form": closed.tolist(),
        "d_min": float(s.d_min[i]),
        "nearest_class": int(s.nearest_class[i]),
        "hull_upper": float(s.hull_upper[i]),
        "hull_lower": float(s.hull_lower[i]),
        "lipschitz": float(guard.lipschitz_),
        "train_in_ball": int(np.sum(d2 < float(s.d_min[i]) ** 2)),
    }
