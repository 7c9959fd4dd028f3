"""The spherical hull distance: certified against an exact QP (Clarabel at 1e-10), computed on
exactly the normalised points, and beside raw-space quantities that do not change."""

from __future__ import annotations

from functools import cache

import numpy as np
import pytest

from guard import Guard
from guard.detectors import CombinedScore, Evidence, SphereHullDistance, make, to_sphere
from guard.geometry.hull import ConvexHullIndex, HullConfig
from tests.reference import solvers as reference


def _relu_features(seed: int, N: int, d: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    # directions of ReLU features with norms spread over two orders of magnitude
    F = np.maximum(rng.normal(size=(N, d)), 0) * rng.lognormal(0.0, 1.0, size=(N, 1))
    return F.astype(np.float32)


@cache
def _case(N: int, d: int, n_cls: int, seed: int):
    F = _relu_features(seed, N, d)
    rng = np.random.default_rng(seed + 1)
    W, b = rng.normal(size=(n_cls, d)), rng.normal(size=n_cls)
    guard = Guard(calib_fraction=0, ood=False).fit_features(F, W, b)
    Q = np.maximum(rng.normal(size=(6, d)), 0) * rng.lognormal(0.0, 1.0, size=(6, 1))
    Q = np.vstack([Q, 3.0 * F[:1], np.zeros((1, d)), F[1:2] + 0.01]).astype(np.float32)
    s = guard.score_features(Q)
    P = to_sphere(F).astype(np.float32)  # the points the index holds
    refs = tuple(reference.hull_distance(P, q) for q in to_sphere(Q))
    return F, W, b, Q, s, refs


def test_to_sphere_unit_rows_and_zero_rows() -> None:
    F = np.array([[3.0, 4.0], [0.0, 0.0], [1e-300, 0.0], [-2.0, 0.0]])
    S = to_sphere(F)
    assert S.dtype == np.float64
    np.testing.assert_allclose(S, [[0.6, 0.8], [0.0, 0.0], [1.0, 0.0], [-1.0, 0.0]])


@pytest.mark.parametrize(("N", "d", "seed"), [(600, 8, 0), (800, 32, 1), (400, 64, 2)])
def test_sphere_interval_contains_exact_qp(N: int, d: int, seed: int) -> None:
    _, _, _, _, s, refs = _case(N, d, 3, seed)
    for i, ref in enumerate(refs):
        # the reference is the square root of an interior-point objective: ~1e-6 near 0
        assert s.sphere_lower[i] <= ref + 1e-5, (i, s.sphere_lower[i], ref)
        assert s.sphere_upper[i] >= ref - 1e-5, (i, s.sphere_upper[i], ref)
        assert s.sphere_upper[i] == pytest.approx(ref, rel=1e-3, abs=1e-5)
        if ref > 1e-3:
            # Clarabel's objective is accurate to ~1e-10: its square root to ~1e-10 / ref
            eps = 1e-10 / ref + 1e-9
            assert s.sphere_lower[i] <= ref + eps and s.sphere_upper[i] >= ref - eps
        assert s.sphere_converged[i]
        # converged: the relative gap reached 1e-3, or the query is inside (upper <= atol)
        assert s.sphere_upper[i] - s.sphere_lower[i] <= 1e-3 * s.sphere_upper[i] + 1e-7
    # a scaled training point has a training direction: inside the hull (up to the float32
    # rounding of the stored normalised point)
    assert s.sphere_upper[6] <= 1e-7 and s.sphere_lower[6] == 0.0
    # the zero query stays the origin: a training point when a training row is all zero (d = 8
    # has some), else at a distance in (0, 1) from the hull of nonnegative unit vectors
    F = _case(N, d, 3, seed)[0]
    if np.any(~F.any(axis=1)):
        assert s.sphere_upper[7] == 0.0
    else:
        assert 0.0 < s.sphere_lower[7] <= s.sphere_upper[7] < 1.0
    # nonnegative unit vectors are at most sqrt(2) apart, and so is a unit query from the hull
    assert np.all(s.sphere_upper <= np.sqrt(2.0) + 1e-12)


def test_raw_space_quantities_are_unchanged() -> None:
    F, W, b, Q, s, _ = _case(400, 64, 3, 2)
    raw = ConvexHullIndex(F, HullConfig()).query(Q.astype(np.float64))
    np.testing.assert_array_equal(s.hull_upper, raw.upper)
    np.testing.assert_array_equal(s.hull_lower, raw.lower)
    np.testing.assert_array_equal(s.ambiguity, s.d_min - raw.upper)
    # and the spherical distance is not the raw one
    assert not np.allclose(s.sphere_upper, s.hull_upper)


def test_sphere_is_scale_invariant_per_query() -> None:
    F, _, _, Q, s, _ = _case(400, 64, 3, 2)
    g = Guard(calib_fraction=0, ood=False).fit_features(F, np.eye(3, F.shape[1]), np.zeros(3))
    a = g.score_features(Q[:6]).sphere_upper
    b = g.score_features((Q[:6] * 7.5).astype(np.float32)).sphere_upper
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(a, s.sphere_upper[:6], rtol=1e-3, atol=1e-6)


def test_sphere_detector_reads_the_guards_result() -> None:
    F, W, b, Q, s, _ = _case(400, 64, 3, 2)
    det = SphereHullDistance().fit(F, None, W, b)
    np.testing.assert_array_equal(det.score(Evidence.from_scores(s, Q)), s.sphere_upper)
    assert isinstance(make("sphere_hull"), SphereHullDistance)
    with pytest.raises(Exception, match="sphere"):
        det.score(Evidence(features=Q))


def test_sphere_survives_the_artifact_round_trip(tmp_path) -> None:
    from guard import load_artifact, save_artifact

    F, W, b, Q, s, _ = _case(400, 64, 3, 2)
    rng = np.random.default_rng(5)
    y = rng.integers(0, 3, size=len(F))
    g = Guard(calib_fraction=0.3).fit_features(F, W, b, y)
    save_artifact(g, tmp_path / "a")
    g2 = load_artifact(tmp_path / "a")
    s1, s2 = g.score_features(Q), g2.score_features(Q)
    np.testing.assert_array_equal(s1.sphere_upper, s2.sphere_upper)
    np.testing.assert_array_equal(s1.ood_score, s2.ood_score)


def test_default_scores_hulls_ride_on_the_guards_passes(tmp_path) -> None:
    """The default OOD score's half-whitened hulls are computed in the guard's shared passes
    (HullPair.query_all), at fit (the calibration inputs) as when serving, and still after a
    save and load (the score binds to the hull's own points); the detectors alone (their own
    passes) give certified intervals around the same distances."""
    from guard import load_artifact, save_artifact
    from guard.geometry import native

    F, W, b, Q, _, _ = _case(400, 64, 3, 2)
    y = np.random.default_rng(5).integers(0, 3, size=len(F))
    g = Guard(calib_fraction=0.3).fit_features(F, W, b, y)
    views = g.ood_.hull_views()
    assert set(views) == {"hw_sphere_hull", "hw_metric_sphere_hull"}
    fused = native.core is not None
    assert all(v.fusable(g.hull_) == fused for v in views.values())
    s = g.score_features(Q)
    _, ev = g._geometry(Q, None, g.ood_, False)
    np.testing.assert_array_equal(s.ood_score, g.ood_.score(ev)[0])
    for name, v in views.items():
        alone = v.query(Q)
        assert np.all(ev.hulls[name] >= alone.lower * (1 - 1e-12) - 1e-12), name
        assert np.all(ev.hulls[name] <= alone.upper * (1 + 2e-2) + 1e-7), name
    # the fit is deterministic: a second one stores the same p-value reference
    g2 = Guard(calib_fraction=0.3).fit_features(F, W, b, y)
    np.testing.assert_array_equal(g.ood_.calib_scores_, g2.ood_.calib_scores_)
    save_artifact(g, tmp_path / "a")
    back = load_artifact(tmp_path / "a")
    assert all(v.fusable(back.hull_) == fused for v in back.ood_.hull_views().values())
    np.testing.assert_array_equal(back.score_features(Q).ood_score, s.ood_score)


def test_sphere_false_skips_only_the_spherical_hull() -> None:
    """score_features(sphere=False): the spherical hull's fields NaN / False, every other field
    bit for bit the same; an OOD score that reads the spherical hull gets it anyway."""
    from dataclasses import fields

    F, W, b, Q, _, _ = _case(400, 64, 3, 2)
    y = np.random.default_rng(5).integers(0, 3, size=len(F))
    g = Guard(calib_fraction=0.3).fit_features(F, W, b, y)
    full, lean = g.score_features(Q), g.score_features(Q, sphere=False)
    assert np.isnan(lean.sphere_upper).all() and np.isnan(lean.sphere_lower).all()
    assert not lean.sphere_converged.any() and np.isfinite(full.sphere_upper).all()
    for f in fields(full):
        if not f.name.startswith("sphere_"):
            np.testing.assert_array_equal(getattr(lean, f.name), getattr(full, f.name), f.name)
    g.ood_ = CombinedScore(("sphere_hull", "fdbd")).fit(
        F, y, W, b, Evidence.from_scores(g.score_features(F[:120]), F[:120])
    )
    np.testing.assert_array_equal(
        g.score_features(Q, sphere=False).sphere_upper, g.score_features(Q).sphere_upper
    )
