"""The results both sides of the package exchange: :class:`Scores` (what scoring computes) and
:class:`Decisions` (what deciding concludes), with the flag bits. Only numpy here, so the
estimator, the decision rule, the evaluation and the server all import it without cycles."""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

FLAG_ADVERSARIAL = 1
FLAG_OOD = 2
FLAG_AMBIGUOUS = 4
FLAG_NAMES = {FLAG_ADVERSARIAL: "adversarial", FLAG_OOD: "ood", FLAG_AMBIGUOUS: "ambiguous"}


@dataclass(frozen=True)
class Decisions:
    """Decisions for N inputs: ``abstain`` (N,) bool, ``adversarial`` (N,) bool, ``flags`` (N,)
    int32 bit mask (1 adversarial, 2 out of distribution, 4 ambiguous) and ``reasons`` (N lists of
    human-readable strings, one per raised flag)."""

    abstain: np.ndarray
    adversarial: np.ndarray
    flags: np.ndarray
    reasons: list[list[str]]


@dataclass(frozen=True)
class Scores:
    """Geometry of N inputs (n classes, f features, K support points).

    Attributes:
        pred: (N,) int64 predicted class. logits: (N, n) float32.
        margins: (N, n) exact distance to each decision boundary; NaN at ``pred``, inf if the
            boundary is unreachable.
        d_min: (N,) distance to the nearest boundary (eq. 12); nearest_class: (N,) its class.
        flip_point: (N, f) closest point on that boundary (the closest flip point).
        margin_gap: (N,) largest primal-dual certificate gap of the exact margin solves.
        logit_radius: (N,) ``sigma_max(W) * d_min``: logits move at most this much (L2) inside
            the ball B(x) of guaranteed classification (eq. 13-14).
        hull_upper, hull_lower: (N,) certified bounds of the distance to the training hull.
        hull_converged: (N,) relative gap reached the tolerance.
        ambiguity: (N,) ``d_min - hull_upper`` (eq. 26); negative = ambiguous.
        sphere_upper, sphere_lower: (N,) certified bounds of the distance of the L2-normalised
            features ``x / ||x||`` to the convex hull of the L2-normalised training features
            (:mod:`guard.detectors.sphere`); sphere_converged: (N,) its gap reached the
            tolerance.
        ood_score: (N,) the guard's combined out-of-distribution score (higher = more OOD;
            :mod:`guard.detectors.combined`); NaN when the guard has no calibrated scorer.
        p_value: (N,) conformal p-value of ``ood_score`` against held-out in-distribution
            data; abstaining at ``p_value < a`` abstains on at most a share ``a`` of such data.
        in_union: (N,) bool; n_balls: (N,) int64; union_slack: (N,) ``max_t r_t - ||x - x_t||``.
        support_idx: (N, K) indices (into the data given to ``fit``) of the training inputs
            supporting the hull projection (-1 padded);
        support_alpha: (N, K) their convex weights.
    """

    pred: np.ndarray
    logits: np.ndarray
    margins: np.ndarray
    d_min: np.ndarray
    nearest_class: np.ndarray
    flip_point: np.ndarray
    margin_gap: np.ndarray
    logit_radius: np.ndarray
    hull_upper: np.ndarray
    hull_lower: np.ndarray
    hull_converged: np.ndarray
    ambiguity: np.ndarray
    sphere_upper: np.ndarray
    sphere_lower: np.ndarray
    sphere_converged: np.ndarray
    ood_score: np.ndarray
    p_value: np.ndarray
    in_union: np.ndarray
    n_balls: np.ndarray
    union_slack: np.ndarray
    support_idx: np.ndarray
    support_alpha: np.ndarray

    def as_dict(self) -> dict[str, np.ndarray]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def __len__(self) -> int:
        return int(self.pred.shape[0])
