"""Union of learned regions against a brute-force scan of every training ball."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from guard.regions import union_membership


def _brute(T, radii, Q):
    D = np.linalg.norm(Q[:, None, :].astype(np.float64) - T[None].astype(np.float64), axis=2)
    S = radii[None, :] - D
    return (S > 0).any(1), (S > 0).sum(1), S.max(1), S.argmax(1)


@pytest.mark.parametrize("seed,d", [(0, 4), (1, 16), (2, 64)])
def test_matches_brute_force(seed, d):
    rng = np.random.default_rng(seed)
    T = np.maximum(rng.normal(size=(800, d)), 0).astype(np.float32)
    radii = rng.gamma(1.0, 0.4 * np.sqrt(d / 4), size=800)
    # in-distribution-ish, far away, and exactly at training points
    Q = np.vstack([
        T[:10] + rng.normal(size=(10, d)).astype(np.float32) * 0.3,
        rng.normal(size=(10, d)).astype(np.float32) * 5 + 10,
        T[20:25],
    ]).astype(np.float32)
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
