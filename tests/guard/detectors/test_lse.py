"""guard.detectors.lse.logsumexp against scipy's, including overflow, -inf and float32."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import logsumexp as scipy_lse

from guard.detectors.lse import logsumexp


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_matches_scipy(dtype):
    rng = np.random.default_rng(0)
    for scale in (1e-3, 1.0, 30.0, 1e4):  # 1e4: exp alone would overflow
        a = (rng.normal(size=(50, 7)) * scale).astype(dtype)
        got, want = logsumexp(a), scipy_lse(a, axis=1)
        assert got.dtype == want.dtype == dtype
        # both round to a few ulps of the row's largest magnitude (the subtracted maximum)
        tol = 8 * np.finfo(dtype).eps * (1.0 + np.abs(a).max(axis=1))
        assert (np.abs(got.astype(np.float64) - want) <= tol).all()


def test_edge_rows():
    a = np.array([[-np.inf, -np.inf], [-np.inf, 0.0], [5.0, 5.0], [-1e308, -1e308]])
    np.testing.assert_array_equal(logsumexp(a), scipy_lse(a, axis=1))
    assert logsumexp(np.zeros((0, 3))).shape == (0,)
