"""Integration on the real data set and the committed default model: the paper's headline
facts (sec. 7.2) on Fashion-MNIST, and exact margins on real ReLU features."""

from __future__ import annotations

import numpy as np
import pytest

from guard import Guard, OnnxClassifier
from guard.defaults import DEFAULT_MODEL
from tests.reference import solvers as reference

datasets = pytest.importorskip("guard.datasets")

N_TRAIN, N_TEST = 6000, 150


@pytest.fixture(scope="module")
def fitted():
    try:
        x, y = datasets.load_fashion_mnist("train")
        xt, yt = datasets.load_fashion_mnist("test")
    except datasets.DataError as exc:  # pragma: no cover - setup installs the package
        pytest.skip(str(exc))
    clf = OnnxClassifier(DEFAULT_MODEL)
    guard = Guard(calib_fraction=0).fit(clf, datasets.as_model_input(x[:N_TRAIN]), y[:N_TRAIN])
    xt, yt = datasets.as_model_input(xt[:N_TEST]), yt[:N_TEST]
    return guard, guard.score(xt), yt, clf.run(xt)[1]


def test_every_test_sample_is_outside_the_training_hull(fitted):
    guard, s, yt, _ = fitted
    # certified: the lower bound itself is positive
    assert (s.hull_lower > 0).all()
    assert s.hull_converged.all()
    assert (s.hull_upper - s.hull_lower <= 1e-3 * s.hull_upper + 1e-12).all()
    closer = np.mean(s.hull_upper < s.d_min)
    print(
        f"\nFashion-MNIST ({N_TRAIN} train, {N_TEST} test): hull closer than the nearest "
        f"boundary for {100 * closer:.1f}% of test samples; accuracy "
        f"{100 * np.mean(s.pred == yt):.1f}%; in union {100 * np.mean(s.in_union):.1f}%"
    )
    assert 0.0 < closer <= 1.0
    assert np.mean(s.pred == yt) > 0.85


def test_real_margins_match_reference_and_need_the_exact_path(fitted):
    guard, s, _, feats = fitted
    assert guard.nonneg_  # ReLU + average pooling features
    for r in range(12):
        i = int(s.pred[r])
        for j in range(guard.W_.shape[0]):
            if j == i:
                continue
            ref = reference.margin(feats[r].astype(np.float64), guard.W_, guard.b_, i, j, True)
            assert s.margins[r, j] == pytest.approx(ref, rel=1e-6, abs=1e-7)
    # the closed form is exact for only a minority of pairs on real ReLU features
    from guard.geometry.margins import compute_margins

    m = compute_margins(feats[:50], guard.W_, guard.b_, True)
    valid = ~np.isnan(m.margins)
    exact_cf = np.isclose(m.closed_form[valid], m.margins[valid], rtol=1e-9)
    print(f"\nclosed form exact for {100 * exact_cf.mean():.1f}% of class pairs")
    assert exact_cf.mean() < 0.5


def test_calibrated_rates_hold_on_a_second_held_out_split():
    """Real data: fit on 6,000 training images with 20% held out for calibration (target
    false-abstain 5%, false-flag 2%), then score 3,000 *other* training images (a second
    held-out split, exchangeable with the first): the realised rates must lie in the 95% range
    split-conformal calibration guarantees (beta-binomial: counts both the calibration split's
    and the second split's randomness)."""
    from guard.evaluation.ood import conformal_range

    try:
        x, y = datasets.load_fashion_mnist("train")
    except datasets.DataError as exc:  # pragma: no cover - setup installs the package
        pytest.skip(str(exc))
    clf = OnnxClassifier(DEFAULT_MODEL)
    guard = Guard(calib_fraction=0.2, target_abstain_rate=0.05, target_flag_rate=0.02, seed=3)
    guard.fit(clf, datasets.as_model_input(x[:N_TRAIN]), y[:N_TRAIN])
    second = datasets.as_model_input(x[N_TRAIN : N_TRAIN + 3000])
    s = guard.score(second)
    d = guard.decide(s)
    n_pv = guard.ood_.calib_scores_.size  # p-values are computed against this many inputs
    lo, hi = conformal_range(n_pv, len(second), 0.05)
    abstain = float(np.mean(d.abstain))
    print(
        f"\nsecond split: false abstain {100 * abstain:.2f}% (target 5%, 95% range "
        f"[{100 * lo:.2f}, {100 * hi:.2f}]%)",
        end="",
    )
    assert lo <= abstain <= hi
    # flag rule d_min < k-th smallest of n_cal clean margins, k = floor((n_cal + 1) * rate):
    # given the calibration set the rate is Beta(k, n_cal + 1 - k), the count beta-binomial
    from scipy.stats import betabinom

    n_cal = guard.thresholds_.n_calib
    k = int(np.floor((n_cal + 1) * 0.02))
    dist = betabinom(len(second), k, n_cal + 1 - k)
    lo, hi = dist.ppf(0.025) / len(second), dist.ppf(0.975) / len(second)
    flag = float(np.mean(s.d_min < guard.thresholds_.d_min))
    print(
        f"; false flag {100 * flag:.2f}% (target 2%, 95% range [{100 * lo:.2f}, {100 * hi:.2f}]%)"
    )
    assert lo <= flag <= hi
