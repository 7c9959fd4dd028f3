"""Metrics of an out-of-distribution score: AUROC, FPR at 95% TPR, AUPR, realised rates.

Conventions (all functions): scores are *outlier* scores, higher = more out-of-distribution, and
**OOD is the positive class**. An input is flagged (detected, abstained on) when its score is at
or above the threshold (``>=``) for the ROC quantities; :func:`realised_rate` uses the strict
``>`` of the calibrated thresholds in :mod:`guard.calibrate`. Ties count half in AUROC, as in
``sklearn.metrics.roc_auc_score``.

Beware: many OOD papers report FPR@95 with *ID* as the positive class (the fraction of OOD inputs
accepted when 95% of ID inputs are kept). :func:`fpr_at_95_tpr` is the other one, stated below.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import rankdata

from ..errors import InputError

__all__ = ["aupr", "auroc", "fpr_at_95_tpr", "ood_metrics", "realised_rate"]


def _pair(id_scores: np.ndarray, ood_scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(id_scores, dtype=np.float64).reshape(-1)
    b = np.asarray(ood_scores, dtype=np.float64).reshape(-1)
    if a.size == 0 or b.size == 0:
        raise InputError(f"expected non-empty ID and OOD scores, got {a.size} and {b.size}")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise InputError("scores contain NaN or Inf")
    return a, b


def auroc(id_scores: np.ndarray, ood_scores: np.ndarray) -> float:
    """Area under the ROC curve with OOD positive: ``P(s_ood > s_id) + P(s_ood = s_id) / 2``.

    Computed exactly with average ranks (Mann-Whitney U); 0.5 = chance, 1 = perfect separation.
    """
    a, b = _pair(id_scores, ood_scores)
    ranks = rankdata(np.concatenate([a, b]))  # average ranks for ties
    u = ranks[a.size :].sum() - b.size * (b.size + 1) / 2.0
    return float(u / (a.size * b.size))


def fpr_at_95_tpr(id_scores: np.ndarray, ood_scores: np.ndarray, tpr: float = 0.95) -> float:
    """False-positive rate at the threshold that detects ``tpr`` (95%) of the OOD inputs.

    OOD = positive. The threshold ``t`` is the largest one with ``#{s_ood >= t} >= ceil(tpr m)``
    (``m`` OOD inputs), i.e. the ``ceil(tpr m)``-th largest OOD score; the result is the fraction
    of **ID** scores ``>= t`` (ID inputs wrongly flagged as OOD). This equals the smallest FPR on
    the ROC curve among points with TPR >= ``tpr``. Lower is better.
    """
    a, b = _pair(id_scores, ood_scores)
    if not 0 < tpr <= 1:
        raise InputError(f"tpr must be in (0, 1], got {tpr}")
    k = max(1, math.ceil(tpr * b.size - 1e-9))
    t = np.sort(b)[::-1][k - 1]
    return float(np.mean(a >= t))


def aupr(id_scores: np.ndarray, ood_scores: np.ndarray) -> float:
    """Area under the precision-recall curve with OOD positive (AUPR-Out).

    Average precision ``sum_n (R_n - R_{n-1}) P_n`` over the distinct thresholds, as
    ``sklearn.metrics.average_precision_score``. Chance level = the OOD share of the inputs.
    """
    a, b = _pair(id_scores, ood_scores)
    s = np.concatenate([a, b])
    pos = np.concatenate([np.zeros(a.size), np.ones(b.size)])
    order = np.argsort(-s, kind="mergesort")
    s, pos = s[order], pos[order]
    last = np.r_[np.flatnonzero(np.diff(s)), s.size - 1]  # last index of each distinct score
    tp = np.cumsum(pos)[last]
    fp = (last + 1) - tp
    precision = tp / (tp + fp)
    recall = tp / b.size
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def realised_rate(scores: np.ndarray, threshold: float) -> float:
    """Fraction of ``scores`` strictly above ``threshold``.

    On held-out in-distribution scores with a threshold from
    :func:`guard.calibrate.upper_threshold` this is the realised false-abstain rate; on OOD scores
    it is the detection rate at that threshold.
    """
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if s.size == 0:
        raise InputError("expected at least one score")
    return float(np.mean(s > threshold))


def ood_metrics(id_scores: np.ndarray, ood_scores: np.ndarray) -> dict[str, float]:
    """``{"auroc", "fpr95", "aupr"}`` of one score on one ID/OOD pair (OOD positive)."""
    return {
        "auroc": auroc(id_scores, ood_scores),
        "fpr95": fpr_at_95_tpr(id_scores, ood_scores),
        "aupr": aupr(id_scores, ood_scores),
    }
