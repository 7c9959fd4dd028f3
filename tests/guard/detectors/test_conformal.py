"""Split-conformal thresholds and p-values (guard.detectors.conformal): the order statistics
they must be, brute-force counts, and the false-rate guarantee on exchangeable data."""

from __future__ import annotations

import math

import numpy as np
import pytest

from guard.detectors.conformal import lower_threshold, p_value, upper_threshold
from guard.errors import InputError


def test_thresholds_are_the_conformal_order_statistics():
    s = np.arange(1.0, 100.0)  # 99 scores
    assert upper_threshold(s, 0.05) == 95.0  # ceil(100 * 0.95) = 95th smallest
    assert lower_threshold(s, 0.05) == 5.0  # floor(100 * 0.05) = 5th smallest
    assert upper_threshold(s, 0.01) == 99.0
    assert math.isinf(upper_threshold(s[:20], 0.05)) is False
    with pytest.raises(InputError, match="at least 99"):
        upper_threshold(s[:50], 0.01)
    with pytest.raises(InputError, match=r"\(0, 1\)"):
        upper_threshold(s, 1.5)


def test_false_rate_is_controlled_on_exchangeable_data():
    """Over many random calibration/test draws the mean false rate is <= the target."""
    rng = np.random.default_rng(0)
    rates_up, rates_lo = [], []
    for _ in range(400):
        cal, test = rng.gamma(2.0, size=200), rng.gamma(2.0, size=2000)
        rates_up.append(np.mean(test > upper_threshold(cal, 0.1)))
        rates_lo.append(np.mean(test < lower_threshold(cal, 0.1)))
    # the guarantee is marginal over calibration draws: <= 0.1, and not far below (tight)
    assert 0.085 < np.mean(rates_up) <= 0.1 + 0.003
    assert 0.085 < np.mean(rates_lo) <= 0.1 + 0.003


def test_p_value_is_the_brute_force_count_with_ties():
    rng = np.random.default_rng(1)
    cal = np.sort(rng.integers(0, 20, size=57).astype(float))  # many ties
    s = np.concatenate([rng.integers(-2, 23, size=200).astype(float), cal[:5]])
    ref = np.array([(1 + sum(c >= v for c in cal)) / (len(cal) + 1) for v in s])
    np.testing.assert_array_equal(p_value(s, cal), ref)
    assert p_value(np.array([np.inf]), cal)[0] == 1 / 58
    assert p_value(np.array([-np.inf]), cal)[0] == 1.0
    with pytest.raises(InputError):
        p_value(s, np.array([]))


def test_p_value_is_valid_and_tight_on_exchangeable_data():
    """P(p <= a) = floor(a (n + 1)) / (n + 1) for continuous scores: mean over many draws."""
    rng = np.random.default_rng(2)
    n, hits, draws = 99, {0.05: 0, 0.2: 0}, 4000
    for _ in range(draws):
        x = rng.normal(size=n + 1)
        p = p_value(x[n:], np.sort(x[:n]))[0]
        for a in hits:
            hits[a] += int(p <= a)
    for a, k in hits.items():
        expect = math.floor(a * (n + 1) + 1e-9) / (n + 1)
        assert abs(k / draws - expect) < 4 * math.sqrt(expect * (1 - expect) / draws), (a, k)
