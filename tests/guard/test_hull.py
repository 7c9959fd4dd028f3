"""Certified hull distance (eq. 20-25): the interval must contain the full QP's value."""

from __future__ import annotations

import numpy as np
import pytest

from guard.hull import ConvexHullIndex, min_norm_point

from . import reference


def _relu_points(seed: int, N: int, d: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (np.maximum(rng.normal(size=(N, d)), 0) * rng.gamma(2.0, 1.0, size=(N, 1))).astype(
        np.float32
    )


@pytest.mark.parametrize("N,d,seed", [(1500, 8, 0), (2000, 32, 1), (400, 64, 2)])
def test_interval_contains_full_qp(N, d, seed):
    T = _relu_points(seed, N, d)
    rng = np.random.default_rng(seed + 100)
    Q = np.maximum(rng.normal(size=(8, d)) * 2.0, 0)
    idx = ConvexHullIndex(T, k=32, tol=1e-3)
    h = idx.query(Q)
    for qi in range(len(Q)):
        ref = reference.hull_distance(T, Q[qi])
        # the reference is the square root of an interior-point objective: accurate to ~1e-6
        # near 0, to ~1e-9 relative elsewhere
        assert h.lower[qi] <= ref + 1e-5, (qi, h.lower[qi], ref)
        assert h.upper[qi] >= ref - 1e-5, (qi, h.upper[qi], ref)
        assert h.upper[qi] == pytest.approx(ref, rel=1e-3, abs=1e-5)
        if ref > 1e-3:
            assert h.lower[qi] <= ref * (1 + 1e-8) <= h.upper[qi] * (1 + 2e-8)
        else:  # inside the hull: an exact LP (HiGHS simplex) must find q as a convex combination
            assert reference.in_hull(T, Q[qi])
        assert h.converged[qi]
        assert h.upper[qi] - h.lower[qi] <= 1e-3 * h.upper[qi] + 1e-12
        # the reported projection is a convex combination at distance `upper`
        assert np.linalg.norm(Q[qi] - h.projection[qi]) == pytest.approx(h.upper[qi], rel=1e-9)


def test_inside_and_training_points_get_zero():
    T = _relu_points(3, 1000, 16)
    rng = np.random.default_rng(0)
    inside = []
    for _ in range(5):  # random convex combinations of many training points
        a = rng.dirichlet(np.ones(200))
        inside.append(a @ T[rng.choice(len(T), 200, replace=False)].astype(np.float64))
    Q = np.vstack([np.array(inside), T[[0, 17, 999]].astype(np.float64)])
    h = ConvexHullIndex(T, k=16).query(Q)
    assert (h.lower == 0).all()
    assert (h.upper[:5] < 1e-6).all()
    assert (h.upper[5:] == 0).all()
    assert h.support_idx[5, 0] == 0 and h.support_alpha[5, 0] == pytest.approx(1.0)


def test_rounds_add_points_the_prefilter_missed():
    """Nearest neighbours are the wrong candidates: the scan must find the far support points."""
    rng = np.random.default_rng(4)
    d = 6
    cluster = rng.normal(size=(500, d)) * 0.1
    far = np.zeros((5, d))
    far[:, 0] = 20.0
    far[:, 1:] = rng.normal(size=(5, d - 1)) * 0.1
    T = np.vstack([cluster, far]).astype(np.float32)
    q = np.zeros(d)
    q[0], q[1] = 10.0, 2.0  # closest hull point lies on the segment cluster-far points
    h = ConvexHullIndex(T, k=8).query(q[None])
    ref = reference.hull_distance(T, q)
    assert h.rounds[0] > 1
    assert h.lower[0] <= ref + 1e-7 <= h.upper[0] + 2e-7
    assert h.upper[0] == pytest.approx(ref, rel=1e-3)
    assert (h.support_idx[0][h.support_idx[0] >= 0] >= 500).any()


def test_bounds_certified_for_large_offsets():
    """float32 scan with features far from the origin: the rounding bound keeps lower valid."""
    T = _relu_points(5, 800, 16) + 300.0
    rng = np.random.default_rng(1)
    Q = T[:6].astype(np.float64) + rng.normal(size=(6, 16)) * 0.05
    h = ConvexHullIndex(T, k=32, tol=1e-3).query(Q)
    for qi in range(len(Q)):
        ref = reference.hull_distance(T, Q[qi])
        assert h.lower[qi] <= ref + 1e-6
        assert h.upper[qi] >= ref - 1e-6


def test_budget_exhausted_still_bounds():
    T = _relu_points(6, 1500, 24)
    q = np.maximum(np.random.default_rng(2).normal(size=24) * 3, 0)
    h = ConvexHullIndex(T, k=2, max_rounds=1, add_per_round=1).query(q[None])
    ref = reference.hull_distance(T, q)
    assert h.rounds[0] == 1
    assert h.lower[0] <= ref + 1e-7 <= h.upper[0] + 2e-7


def test_min_norm_point_matches_reference():
    rng = np.random.default_rng(8)
    for m, d in ((5, 3), (40, 6), (100, 10)):
        P = rng.normal(size=(m, d)) + 1.5
        a = min_norm_point(P)
        assert (a >= 0).all() and a.sum() == pytest.approx(1.0)
        ref = reference.hull_distance(P, np.zeros(d))
        assert np.linalg.norm(a @ P) == pytest.approx(ref, rel=1e-7, abs=1e-9)


def test_support_weights_are_a_convex_combination():
    T = _relu_points(9, 600, 10)
    Q = np.maximum(np.random.default_rng(3).normal(size=(4, 10)) * 2, 0)
    h = ConvexHullIndex(T, k=32).query(Q, top_support=600)
    for qi in range(len(Q)):
        ok = h.support_idx[qi] >= 0
        assert h.support_alpha[qi][ok].sum() == pytest.approx(1.0)
        p = h.support_alpha[qi][ok] @ T[h.support_idx[qi][ok]].astype(np.float64)
        np.testing.assert_allclose(p, h.projection[qi], atol=1e-9)
