"""OOD metrics (guard.evaluation.metrics) against scikit-learn and brute force; OOD is the
positive class."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from guard.errors import InputError
from guard.evaluation.metrics import aupr, auroc, fpr_at_95_tpr, ood_metrics, realised_rate


def _cases():
    rng = np.random.default_rng(0)
    for i in range(40):
        n, m = rng.integers(1, 60, size=2)
        a = rng.normal(0, 1, n)
        b = rng.normal(rng.uniform(-1, 2), 1, m)
        if i % 3 == 0:  # heavy ties
            a, b = np.round(a), np.round(b)
        yield a, b


def _sk(a, b):
    y = np.r_[np.zeros(len(a)), np.ones(len(b))]
    return y, np.r_[a, b]


def _fpr_brute(a, b, tpr=0.95):
    """Smallest FPR over every threshold t (flag s >= t) whose TPR reaches ``tpr``."""
    best = 1.0
    for t in np.r_[a, b, np.inf]:
        if np.mean(b >= t) >= tpr - 1e-12:
            best = min(best, np.mean(a >= t))
    return best


def test_auroc_and_aupr_match_sklearn():
    for a, b in _cases():
        y, s = _sk(a, b)
        assert auroc(a, b) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
        assert aupr(a, b) == pytest.approx(average_precision_score(y, s), abs=1e-12)


def test_fpr_at_95_matches_brute_force_and_roc_curve():
    for a, b in _cases():
        ref = _fpr_brute(a, b)
        assert fpr_at_95_tpr(a, b) == pytest.approx(ref, abs=1e-12)
        y, s = _sk(a, b)
        fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
        assert fpr_at_95_tpr(a, b) == pytest.approx(fpr[tpr >= 0.95 - 1e-12].min(), abs=1e-12)
        for t in (0.5, 0.8, 1.0):
            assert fpr_at_95_tpr(a, b, tpr=t) == pytest.approx(_fpr_brute(a, b, t), abs=1e-12)


def test_known_values_and_conventions():
    id_s = np.arange(100.0)
    assert auroc(id_s, id_s + 1000) == 1.0  # OOD scores higher: perfect
    assert auroc(id_s + 1000, id_s) == 0.0
    assert auroc(id_s, id_s) == 0.5
    assert aupr(id_s, id_s + 1000) == 1.0
    # 100 OOD scores 0..99: threshold detecting 95 of them is 5; ID scores >= 5 -> FPR
    ood = np.arange(100.0)
    assert fpr_at_95_tpr(np.array([4.0, 5.0, 6.0, 100.0]), ood) == 0.75
    assert fpr_at_95_tpr(np.array([4.9]), ood) == 0.0
    m = ood_metrics(id_s, id_s + 0.5)
    assert set(m) == {"auroc", "fpr95", "aupr"}


def test_realised_rate_is_strictly_above():
    s = np.array([1.0, 2.0, 3.0, 4.0])
    assert realised_rate(s, 2.0) == 0.5
    assert realised_rate(s, 0.0) == 1.0
    assert realised_rate(s, 4.0) == 0.0
    with pytest.raises(InputError):
        realised_rate([], 0.0)


def test_realised_rate_at_a_conformal_threshold_is_near_the_target():
    from guard.calibrate import upper_threshold

    rng = np.random.default_rng(1)
    cal, test = rng.normal(size=5000), rng.normal(size=20000)
    t = upper_threshold(cal, 0.05)
    assert abs(realised_rate(test, t) - 0.05) < 0.01


def test_input_validation():
    with pytest.raises(InputError):
        auroc([], [1.0])
    with pytest.raises(InputError):
        aupr([np.nan], [1.0])
    with pytest.raises(InputError):
        fpr_at_95_tpr([1.0], [1.0], tpr=0)
