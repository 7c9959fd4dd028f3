"""The evaluation sets (guard.evaluation.sets): shapes, dtypes, ranges, determinism."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from guard.errors import InputError

evalsets = pytest.importorskip("guard.evaluation.sets")


def _check_inputs(x, n=None):
    assert x.dtype == np.float32 and x.ndim == 4 and x.shape[1:] == (1, 28, 28)
    if n is not None:
        assert len(x) == n
    assert x.min() >= 0.0 and x.max() <= 1.0


def test_generated_sets_shapes_ranges_and_determinism():
    for fn, n in ((evalsets.uniform_noise, 50), (evalsets.gaussian_noise, 50)):
        x = fn(n)
        _check_inputs(x, n)
        np.testing.assert_array_equal(x, fn(n))
        assert not np.array_equal(x, fn(n, seed=123))
    g = evalsets.gaussian_noise(2000)
    assert abs(g.mean() - 0.5) < 0.01 and 0 < (g == 0).mean() < 0.05 and 0 < (g == 1).mean() < 0.05
    c = evalsets.constant_images()
    _check_inputs(c, 256)
    flat = c.reshape(256, -1)
    assert np.all(flat.min(1) == flat.max(1))
    assert c[0].max() == 0.0 and c[-1].min() == 1.0
    assert len(np.unique(c)) == 256
    _check_inputs(evalsets.constant_images(5), 5)


def test_digits_and_fashion_sets():
    from guard.datasets import DataError

    d = evalsets.digits(100)
    _check_inputs(d, 100)
    np.testing.assert_array_equal(d, evalsets.digits(100))
    _check_inputs(evalsets.digits(), 1797)
    try:
        x, y = evalsets.fmnist_test(200, seed=3)
    except DataError as exc:  # pragma: no cover - setup installs the data set
        pytest.skip(str(exc))
    _check_inputs(x, 200)
    assert y.dtype == np.int64 and y.shape == (200,)
    x2, y2 = evalsets.fmnist_test(200, seed=3)
    np.testing.assert_array_equal(x, x2)
    np.testing.assert_array_equal(y, y2)
    xn, yn = evalsets.fmnist_test(300, classes=(8, 9))
    assert set(np.unique(yn)) == {8, 9}
    _check_inputs(xn, 300)
    xa, ya = evalsets.fmnist_test()
    assert len(xa) == 10000 and np.bincount(ya).tolist() == [1000] * 10
    for kind in evalsets.COVARIATE_SHIFT:
        xs, ys = evalsets.COVARIATE_SHIFT[kind](50, seed=1)
        _check_inputs(xs, 50)
        np.testing.assert_array_equal(ys, evalsets.fmnist_test(50, seed=1)[1])
    for load in evalsets.FAR_OOD.values():
        _check_inputs(load(20), 20)


def test_shift_transforms():
    rng = np.random.default_rng(0)
    x = rng.random((3, 1, 28, 28), dtype=np.float32)
    np.testing.assert_array_equal(evalsets.inverted(x), 1 - x)
    r = evalsets.rotated90(x)
    for i, j in itertools.product(range(28), range(0, 28, 7)):
        assert r[0, 0, i, j] == x[0, 0, j, 27 - i]  # counter-clockwise
    np.testing.assert_array_equal(evalsets.rotated90(r, k=3), x)
    bl = evalsets.blurred(x)
    _check_inputs(bl, 3)
    assert bl.std() < x.std()  # smoothing reduces the variance of noise
    flat = np.full((1, 1, 28, 28), 0.3, np.float32)
    np.testing.assert_allclose(evalsets.blurred(flat), flat, atol=1e-6)
    with pytest.raises(InputError):
        evalsets.shifted_fmnist_test("sideways")
