"""Union of learned regions against a brute-force scan of every training ball."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from guard.geometry.regions import UnionOfBalls
from tests.reference.union_range_search import union_membership


def _brute(T, radii, Q):
    D = np.linalg.norm(Q[:, None, :].astype(np.float64) - T[None].astype(np.float64), axis=2)
    S = radii[None, :] - D
    return (S > 0).any(1), (S > 0).sum(1), S.max(1), S.argmax(1)


def _cloud(seed, d, n=800):
    """ReLU-like centres, gamma radii; queries near centres, far away, and at centres."""
    rng = np.random.default_rng(seed)
    T = np.maximum(rng.normal(size=(n, d)), 0).astype(np.float32)
    radii = rng.gamma(1.0, 0.4 * np.sqrt(d / 4), size=n)
    Q = np.vstack(
        [
            T[:10] + rng.normal(size=(10, d)).astype(np.float32) * 0.3,
            rng.normal(size=(10, d)).astype(np.float32) * 5 + 10,
            T[20:25],
        ]
    ).astype(np.float32)
    return T, radii, Q


@pytest.mark.parametrize("seed,d", [(0, 4), (1, 16), (2, 64)])
def test_matches_brute_force(seed, d):
    T, radii, Q = _cloud(seed, d)
    index = faiss.IndexFlatL2(d)
    index.add(T)
    r = union_membership(index, radii, Q, k=4)
    inside, count, slack, best = _brute(T, radii, Q)
    np.testing.assert_array_equal(r.in_union, inside)
    np.testing.assert_array_equal(r.n_balls, count)
    np.testing.assert_allclose(r.slack, slack, rtol=1e-9, atol=1e-9)
    np.testing.assert_array_equal(r.best_ball, best)
    assert r.in_union[-5:].all()  # a training point is inside its own ball (r_t > 0)
    assert not r.in_union[10:20].any()


def test_zero_radius_balls_contain_nothing():
    T = np.eye(3, dtype=np.float32)
    index = faiss.IndexFlatL2(3)
    index.add(T)
    r = union_membership(index, np.zeros(3), T)
    assert not r.in_union.any() and (r.slack == 0).all()


def _check_exact(T, radii, Q, device="cpu", engine="auto"):
    u = UnionOfBalls(T, radii, device=device, engine=engine)
    if device == "cpu" and engine == "auto":
        assert u.engine == "native"  # (the compiled scan is built where the tests run)
    r = u.query(Q, chunk=7)
    inside, count, slack, best = _brute(T, radii, Q)
    np.testing.assert_array_equal(r.in_union, inside)
    np.testing.assert_array_equal(r.n_balls, count)
    np.testing.assert_allclose(r.slack, slack, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(r.best_ball, best)
    return r


@pytest.mark.parametrize("seed,d", [(0, 4), (1, 16), (2, 64), (3, 512)])
def test_matrix_scan_matches_brute_force_and_the_range_search(seed, d):
    T, radii, Q = _cloud(seed, d, n=700)
    r = _check_exact(T, radii, Q)
    _check_exact(T, radii, Q, device="torch")  # the GPU code path, on the CPU
    _check_exact(T, radii, Q, engine="numpy")
    index = faiss.IndexFlatL2(d)
    index.add(T)
    r0 = union_membership(index, radii, Q, k=4)
    np.testing.assert_array_equal(r.n_balls, r0.n_balls)
    np.testing.assert_array_equal(r.best_ball, r0.best_ball)


def test_matrix_scan_on_boundaries_large_offsets_and_huge_radii():
    """Queries 1e-8 inside or outside sphere surfaces (float32 cannot decide them, float64
    can), centres far from the origin (cancellation in |q|^2 + |x|^2 - 2 q.x), and a few balls
    of a huge stand-in radius."""
    rng = np.random.default_rng(7)
    d = 32
    T = (rng.normal(size=(400, d)) + 300.0).astype(np.float32)
    radii = rng.uniform(0.5, 3.0, size=400)
    dirs = rng.normal(size=(12, d))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    on = T[:12].astype(np.float64) + dirs * radii[:12, None]  # on (float32-rounded) surfaces
    Q = np.vstack([on, T[50:60] + 0.01, T[:5] + 40.0]).astype(np.float32)
    side = np.where(np.arange(12) % 2 == 0, 1e-8, -1e-8)  # even: just inside, odd: outside
    radii[:12] = (
        np.linalg.norm(Q[:12].astype(np.float64) - T[:12].astype(np.float64), axis=1) + side
    )
    for engine in ("native", "numpy"):
        r = _check_exact(T, radii, Q, engine=engine)
        np.testing.assert_array_equal(r.n_balls[:12] > 0, side > 0)
    _check_exact(T, radii, Q, device="torch")
    radii2 = radii.copy()
    radii2[[3, 200]] = 1e18
    for engine in ("native", "numpy"):
        r = _check_exact(T, radii2, Q, engine=engine)
        assert r.in_union.all() and set(r.best_ball.tolist()) <= {3, 200}


@pytest.mark.parametrize("nq", [1, 63, 200])
def test_compiled_scan_equals_numpy_scan_at_every_batch_size(nq):
    """Blocks of balls and chunks of queries of every size: the same exact answers."""
    rng = np.random.default_rng(nq)
    T = np.maximum(rng.normal(size=(70000, 8)), 0).astype(np.float32)
    radii = rng.gamma(1.0, 0.5, size=len(T))
    Q = np.maximum(rng.normal(size=(nq, 8)), 0).astype(np.float32)
    a = UnionOfBalls(T, radii, engine="native").query(Q)
    b = UnionOfBalls(T, radii, engine="numpy").query(Q)
    np.testing.assert_array_equal(a.in_union, b.in_union)
    np.testing.assert_array_equal(a.n_balls, b.n_balls)
    np.testing.assert_array_equal(a.best_ball, b.best_ball)
    # (the float64 distance of the best ball, summed in another order: the last bit may differ)
    np.testing.assert_allclose(a.slack, b.slack, rtol=1e-14, atol=0)
