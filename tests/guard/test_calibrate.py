"""Calibrated decision thresholds and the decisions built on them (the split-conformal
thresholds themselves: tests/guard/detectors/test_conformal.py)."""

from __future__ import annotations

import numpy as np
import pytest

from guard import Guard, InputError, load_artifact, save_artifact
from guard.calibrate import Thresholds, calibrate
from guard.types import FLAG_ADVERSARIAL, FLAG_AMBIGUOUS, FLAG_OOD


def _blobs(seed, n_per=400, f=8, n=3):
    rng = np.random.default_rng(seed)
    centers = rng.gamma(2.0, 2.0, size=(n, f))
    F = np.vstack([np.maximum(c + rng.normal(size=(n_per, f)), 0) for c in centers])
    W = centers - centers.mean(0)
    b = -0.5 * (centers**2).sum(1) + 0.5 * (centers.mean(0) ** 2).sum()
    return F.astype(np.float32), W, b


def test_guard_calibrates_on_held_out_split_and_rates_hold_on_a_second_split(tmp_path):
    F, W, b = _blobs(1)
    F2, _, _ = _blobs(1)  # same distribution, same centers (same seed), fresh noise below
    rng = np.random.default_rng(5)
    fresh = np.maximum(F2 + rng.normal(size=F2.shape).astype(np.float32) * 0.3, 0)
    g = Guard(hull_k=16, calib_fraction=0.25, target_abstain_rate=0.1, target_flag_rate=0.1)
    g.fit_features(F, W, b)
    t = g.thresholds_
    assert t.n_calib == 300 and np.isfinite(t.hull) and t.d_min > 0
    assert len(g.train_index_) == 900
    # on the calibration set itself the hull rule abstains on at most the target share
    assert np.mean(g.calib_scores_["hull"] > t.hull) <= 0.1
    # support indices refer to the rows given to fit (training part only)
    s = g.score_features(fresh[:50])
    sup = s.support_idx[s.support_idx >= 0]
    assert set(sup.tolist()) <= set(g.train_index_.tolist())
    # round trip keeps the thresholds and calibration scores
    g2 = load_artifact(save_artifact(g, tmp_path / "a"))
    assert g2.thresholds_ == t
    np.testing.assert_array_equal(g2.calib_scores_["d_min"], g.calib_scores_["d_min"])


def test_decide_flags_and_reasons():
    F, W, b = _blobs(2)
    g = Guard(hull_k=16, calib_fraction=0).fit_features(F, W, b)
    g.thresholds_ = Thresholds(ambiguity=0.0, hull=1.0, d_min=0.5)
    far = F[:1] + 50.0  # far from everything: out of distribution
    centre = W.mean(0, keepdims=True).astype(np.float32) * 0  # origin: near boundaries
    s = g.score_features(np.vstack([F[:1], far, centre]).astype(np.float32))
    d = g.decide(s)
    assert d.flags[1] & FLAG_OOD and d.abstain[1]
    assert any("out of distribution" in r for r in d.reasons[1])
    for i in range(3):
        assert bool(d.flags[i] & FLAG_AMBIGUOUS) == (s.ambiguity[i] < 0)
        assert bool(d.flags[i] & FLAG_ADVERSARIAL) == (s.d_min[i] < 0.5) == d.adversarial[i]
        assert d.abstain[i] == bool(d.flags[i] & (FLAG_OOD | FLAG_AMBIGUOUS))
        assert len(d.reasons[i]) == bin(int(d.flags[i])).count("1")


def test_calibrate_validates():
    with pytest.raises(InputError):
        calibrate(np.ones(10), np.ones(9))
    with pytest.raises(InputError, match="calib_fraction=0"):
        calibrate(np.ones(10), np.ones(10))
