"""guard.geometry.accel: the products the scans use, on every device this machine has."""

from __future__ import annotations

import numpy as np
import pytest

from guard.geometry.accel import RowProducts
from guard.geometry.errors import GeometryError

torch = pytest.importorskip("torch")


@pytest.mark.parametrize("device", ["cpu", "torch", "auto"])
def test_products_match_float64_within_the_rounding_bound(device):
    rng = np.random.default_rng(0)
    M = rng.normal(size=(3000, 48)).astype(np.float32)
    X = rng.normal(size=(5, 48)).astype(np.float32)
    p = RowProducts(M, device)
    exact = X.astype(np.float64) @ M.T.astype(np.float64)
    gamma = 48 * 2.0**-24 / (1 - 48 * 2.0**-24)
    bound = gamma * np.abs(X).astype(np.float64) @ np.abs(M).T.astype(np.float64)
    for got in (p(X), p.by_row(X).T):
        assert got.dtype == np.float32 and got.shape == (5, 3000)
        assert np.all(np.abs(got - exact) <= bound)
    assert p(X).flags.c_contiguous and p.by_row(X).flags.c_contiguous


def test_device_choice():
    M = np.ones((4, 3), dtype=np.float32)
    assert RowProducts(M, "cpu").device == "cpu"
    assert RowProducts(M, "torch").device == "torch"
    assert RowProducts(M, "auto").device == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(GeometryError, match="no CUDA GPU"):
            RowProducts(M, "cuda")
    with pytest.raises(GeometryError, match="device must be"):
        RowProducts(M, "tpu")
