"""HullPair: the raw and the spherical hull, and views of linear maps of the same points
(HullView), queried in one set of passes (native run_views).

Checked against exact QPs (Clarabel through cvxpy, tests/reference), against two separate
ConvexHullIndex queries, and between one and two threads (bit for bit)."""

from __future__ import annotations

from dataclasses import fields
from functools import cache

import numpy as np
import pytest

from guard.geometry import native
from guard.geometry.errors import GeometryError
from guard.geometry.hull import ConvexHullIndex, HullConfig
from guard.geometry.hull_pair import HullPair
from guard.geometry.hull_view import HullView
from guard.geometry.regions import UnionOfBalls
from guard.geometry.sphere import to_sphere
from tests.reference import solvers as reference

needs_core = pytest.mark.skipif(native.core is None, reason="the compiled core is not built")

# pools and subsamples smaller than N, so that every part of a full round runs
CONFIG = HullConfig(subsample=256, pool_size=128, add_per_round=16)


@cache
def _case(N: int, d: int, seed: int):
    rng = np.random.default_rng(seed)
    # ReLU features whose norms spread over three orders of magnitude, some rows all zero
    F = np.maximum(rng.normal(size=(N, d)), 0) * rng.lognormal(0.0, 1.5, size=(N, 1))
    F[rng.choice(N, 3, replace=False)] = 0.0
    F = F.astype(np.float32)
    Q = np.maximum(rng.normal(size=(8, d)), 0) * rng.lognormal(0.0, 1.5, size=(8, 1))
    extra = [F[5], 7.0 * F[9], np.zeros(d), F[11] + 0.05, -F[13]]  # a training point, ...
    Q = np.vstack([Q, *extra]).astype(np.float32)
    pair = HullPair(ConvexHullIndex(F, CONFIG, device="cpu"), CONFIG, device="cpu")
    return F, Q, pair


@needs_core
@pytest.mark.parametrize(("N", "d", "seed"), [(3000, 16, 0), (2000, 48, 1)])
def test_pair_intervals_contain_the_exact_distances(N: int, d: int, seed: int) -> None:
    F, Q, pair = _case(N, d, seed)
    assert pair.fused
    h, s = pair.query(Q, top_support=4, threads=2)
    P = pair.sphere_view.rows().astype(np.float64)
    for i, q in enumerate(Q):
        for name, res, T, x in (
            ("raw", h, F, q.astype(np.float64)),
            ("sphere", s, P, to_sphere(q[None])[0]),
        ):
            ref = reference.hull_distance(T, x)
            # the reference is the square root of an interior-point objective: ~1e-6 near 0
            assert res.lower[i] <= ref + 1e-5 * max(1.0, ref), (name, i, res.lower[i], ref)
            assert res.upper[i] >= ref - 1e-5 * max(1.0, ref), (name, i, res.upper[i], ref)
            assert res.converged[i], (name, i)
            assert res.upper[i] - res.lower[i] <= 1e-3 * res.upper[i] + 1e-7
    # a training point is its own support, at distance 0; its direction and that of a scaled
    # training point are inside the spherical hull up to the float32 rounding of the stored
    # normalised point
    assert h.upper[8] == 0.0 and h.support_idx[8, 0] == 5 and h.support_alpha[8, 0] == 1.0
    assert s.upper[8] <= 1e-7 and s.upper[9] <= 1e-7
    assert s.support_idx.shape == (len(Q), 0)


@needs_core
def test_pair_agrees_with_separate_queries_and_threads_do_not_matter() -> None:
    F, _, pair = _case(3000, 16, 0)
    rng = np.random.default_rng(7)
    Q = (np.maximum(rng.normal(size=(40, 16)), 0) * rng.lognormal(0, 1.5, (40, 1))).astype(
        np.float32
    )
    one = pair.query(Q, threads=1)
    two = pair.query(Q, threads=2)
    for a, b in zip(one, two, strict=True):
        for f in fields(a):
            x, y = getattr(a, f.name), getattr(b, f.name)
            assert (x is None and y is None) or np.array_equal(x, y), f.name
    raw = pair.raw.query(Q)
    sph = pair.sphere_view.query_directions(to_sphere(Q))
    for fused, alone in ((one[0], raw), (one[1], sph)):
        # both are certified intervals around the same distance
        assert np.all(fused.lower <= alone.upper * (1 + 1e-12) + 1e-12)
        assert np.all(alone.lower <= fused.upper * (1 + 1e-12) + 1e-12)
        np.testing.assert_allclose(fused.upper, alone.upper, rtol=2e-3, atol=1e-7)


@needs_core
def test_pair_batches_of_one_match_the_batch() -> None:
    _, Q, pair = _case(2000, 48, 1)
    whole = pair.query(Q, threads=2)
    for i in range(0, len(Q), 5):
        h, s = pair.query(Q[i : i + 1], threads=1)
        # the certificate covers the float32 rounding that differs with the batch
        assert h.lower[0] <= whole[0].upper[i] * (1 + 1e-12) + 1e-12
        assert whole[0].lower[i] <= h.upper[0] * (1 + 1e-12) + 1e-12
        assert s.lower[0] <= whole[1].upper[i] * (1 + 1e-12) + 1e-12
        assert whole[1].lower[i] <= s.upper[0] * (1 + 1e-12) + 1e-12


def test_pair_without_the_core_queries_each_hull() -> None:
    F, Q, _ = _case(3000, 16, 0)
    config = HullConfig(subsample=256, pool_size=128, add_per_round=16, engine="numpy")
    pair = HullPair(ConvexHullIndex(F[:500], config, device="cpu"), config, device="cpu")
    assert not pair.fused
    h, s = pair.query(Q[:4])
    rows = pair.sphere_view.rows().astype(np.float64)
    for i, q in enumerate(Q[:4]):
        ref = reference.hull_distance(rows, to_sphere(q[None])[0])
        assert s.lower[i] <= ref + 1e-5 and s.upper[i] >= ref - 1e-5
        ref = reference.hull_distance(F[:500], q.astype(np.float64))
        assert h.lower[i] <= ref + 1e-5 * max(1, ref) and h.upper[i] >= ref - 1e-5 * max(1, ref)


def test_pair_rejects_bad_queries() -> None:
    _, _, pair = _case(3000, 16, 0)
    with pytest.raises(GeometryError, match="expected queries"):
        pair.query(np.zeros((2, 5)))
    with pytest.raises(GeometryError, match="NaN or Inf"):
        pair.query(np.full((1, 16), np.nan))


def _view(pair: HullPair, Q64: np.ndarray, core=None):
    """The argument tuple of native query_views for the spherical view (or the core given)."""
    return (pair.sphere_view._core if core is None else core, Q64, 0)


def _view_core(T: np.ndarray, scale: np.ndarray, A=None, kappa=1.0, a_fro=0.0, sub=None):
    """A view core of the rows T (native HullCore's second constructor)."""
    from guard.geometry.hull import core_params

    sub = np.arange(min(len(T), 64)) if sub is None else sub
    prm = core_params(CONFIG, len(T), T.shape[1], len(sub), 1.0)
    return native.core.HullCore(T, sub, scale, A, kappa, a_fro, prm, native.blas())


@needs_core
def test_native_views_check_their_arguments() -> None:
    F, Q, pair = _case(3000, 16, 0)
    other = HullView(pair.raw.points[:100].copy(), None, CONFIG, device="cpu")
    copy = HullView(pair.raw.points.copy(), None, CONFIG, device="cpu")
    Q64 = Q.astype(np.float64)
    raw = pair.raw._core
    scale = pair.sphere_view.scale
    for v in (other, copy):  # views of other points (same shape or not)
        with pytest.raises(ValueError, match="a view core of raw's points"):
            native.core.query_views(raw, Q64, 0, [_view(pair, Q64, v._core)], 1)
    with pytest.raises(ValueError, match="a view core of raw's points"):
        native.core.query_views(raw, Q64, 0, [_view(pair, Q64, raw)], 1)
    with pytest.raises(ValueError, match="must not be a view"):
        native.core.query_views(pair.sphere_view._core, Q64, 0, [], 1)
    with pytest.raises(ValueError, match="two different cores"):
        native.core.query_views(raw, Q64, 0, [_view(pair, Q64), _view(pair, Q64)], 1)
    with pytest.raises(ValueError, match="differ in rows"):
        native.core.query_views(raw, Q64, 0, [_view(pair, Q64[:3])], 1)
    with pytest.raises(ValueError, match="3-tuple"):
        native.core.query_views(raw, Q64, 0, [(pair.sphere_view._core, Q64)], 1)
    with pytest.raises(ValueError, match="threads"):
        native.core.query_views(raw, Q64, 0, [_view(pair, Q64)], 0)
    # a view core checks its own arguments
    T = pair.raw.points
    with pytest.raises(ValueError, match="one value per point"):
        _view_core(T, scale[:5])
    with pytest.raises(ValueError, match="d x d"):
        _view_core(T, scale, A=np.eye(16)[:8], kappa=1, a_fro=4)
    with pytest.raises(ValueError, match="kappa and a_fro"):
        _view_core(T, scale, A=np.eye(16), kappa=np.nan, a_fro=4)
    with pytest.raises(ValueError, match="out of range"):
        _view_core(T, scale, sub=np.array([0, len(T)]))
    with pytest.raises(ValueError, match="CPU only"):
        pair.sphere_view._core.query(Q64, lambda G: G, 0)


@needs_core
def test_view_rows_are_computed_as_numpy_computes_them() -> None:
    """The core's rows (view_row, computed on demand) against numpy's float64 to_sphere(t A):
    the same float32 rows up to one rounding, and every one of them at the indices asked."""
    F, _, pair = _case(3000, 16, 0)
    for A in (None, *_maps(16, 0)):
        view = HullView(pair.raw.points, A, CONFIG, device="cpu")
        got = view.rows()
        y = F.astype(np.float64) if A is None else F.astype(np.float64) @ A
        want = to_sphere(y)
        assert got.dtype == np.float32 and got.shape == F.shape
        assert np.all(np.abs(got - want) <= 2 * np.finfo(np.float32).eps * np.abs(want) + 1e-45)
        idx = np.array([5, 0, 2999, 5])
        assert np.array_equal(view.rows(idx), got[idx])
    zero = HullView(np.zeros((3, 4), dtype=np.float32), None, CONFIG, device="cpu")
    assert np.array_equal(zero.rows(), np.zeros((3, 4), dtype=np.float32))
    with pytest.raises(ValueError, match="out of range"):
        native.core.view_rows(pair.raw.points, None, np.array([3000]))


@needs_core
def test_views_keep_no_rows_of_their_own() -> None:
    """A view on the compiled core holds its scale, not N x d rows: its index is never built
    by queries, fused or alone."""
    F, Q, pair, views = _view_case(3000, 16, 0)
    pair.query_all(Q, None, views)
    for v in (pair.sphere_view, *views):
        v.query(Q[:3])
        assert v.engine == "native" and v._index is None


def _radii(F: np.ndarray, seed: int, huge: bool = False) -> np.ndarray:
    rng = np.random.default_rng(seed)
    r = rng.uniform(0.05, 0.5, size=len(F)) * np.linalg.norm(F, axis=1).mean() / 3
    if huge:  # balls of a class no other class borders: handled apart, in float64
        r[:3] = 1e9
    return r


@pytest.mark.parametrize(("threads", "huge"), [(1, False), (2, False), (2, True)])
def test_union_riding_on_the_first_pass_is_the_unions_own_answer(threads: int, huge: bool) -> None:
    F, Q, pair = _case(3000, 16, 0)
    union = UnionOfBalls(pair.raw.points, _radii(F, 3, huge), device="cpu")
    rng = np.random.default_rng(11)
    near = F[rng.choice(len(F), 30)] + rng.normal(scale=0.05, size=(30, 16))
    X = np.vstack([Q, near]).astype(np.float32)
    h, s, r = pair.query_with_union(X, union, top_support=4, threads=threads)
    alone = union.query(X)
    for f in fields(r):
        assert np.array_equal(getattr(r, f.name), getattr(alone, f.name)), f.name
    assert r.in_union.all() if huge else 0 < r.in_union.sum() < len(X)  # both verdicts occur
    h2, s2 = pair.query(X, top_support=4, threads=threads)
    assert np.array_equal(h.upper, h2.upper) and np.array_equal(s.upper, s2.upper)


def test_union_over_other_points_is_queried_on_its_own() -> None:
    F, Q, pair = _case(3000, 16, 0)
    copy = UnionOfBalls(pair.raw.points.copy(), _radii(F, 3), device="cpu")
    _, _, r = pair.query_with_union(Q, copy)
    alone = copy.query(Q)
    for f in fields(r):
        assert np.array_equal(getattr(r, f.name), getattr(alone, f.name)), f.name
    if native.core is not None:
        with pytest.raises(ValueError, match="not centred on the raw hull's points"):
            Q64 = Q.astype(np.float64)
            native.core.query_views(pair.raw._core, Q64, 0, [_view(pair, Q64)], 1, copy._core, Q)


def _assert_lower_within_own_bound(res, T: np.ndarray, Y: np.ndarray) -> None:
    """lower <= max(0, (g.q - max_t g.t) / |g|) for g = q - p (p the reported hull point), in
    float64 over all the points T; lower = 0 where q is its own hull point."""
    G = Y - res.projection
    norm = np.linalg.norm(G, axis=1)
    live = norm > 0
    bound = (np.einsum("ij,ij->i", G, Y) - (G @ T.T).max(axis=1))[live] / norm[live]
    bound = np.maximum(bound, 0.0)
    assert np.all(res.lower[live] <= bound * (1 + 1e-12) + 1e-15)
    assert np.all(res.lower[~live] == 0.0)


@needs_core
@pytest.mark.parametrize(("N", "d", "seed"), [(3000, 16, 0), (2000, 48, 1)])
def test_pair_lower_bounds_hold_for_their_own_direction(N: int, d: int, seed: int) -> None:
    """The certificate without any solver's tolerance: for g = q - p (p the reported hull
    point), every hull point t has g.t <= max_t g.t, so the distance is at least
    (g.q - max_t g.t) / |g|, computed here in float64 over all the points. A lower bound above
    it would mean the scan missed the maximum: the spherical hull's products come from the raw
    rows times fl32(1/|t|), and this catches a rounding bound that does not cover them. (A
    distance is never negative: the bound is clipped at 0, as the core clips it.)"""
    F, Q, pair = _case(N, d, seed)
    rng = np.random.default_rng(seed + 5)
    X = (np.maximum(rng.normal(size=(40, d)), 0) * rng.lognormal(0, 1.5, (40, 1))).astype(
        np.float32
    )
    X = np.vstack([Q, X])
    for threads in (1, 2):
        h, s = pair.query(X, threads=threads)
        for res, T, Y in (
            (h, F.astype(np.float64), X.astype(np.float64)),
            (s, pair.sphere_view.rows().astype(np.float64), to_sphere(X)),
        ):
            _assert_lower_within_own_bound(res, T, Y)
            assert np.all(res.lower <= res.upper)


@needs_core
def test_pair_lower_bounds_hold_with_near_ties_on_the_sphere() -> None:
    """Training points along few directions at many norms: on the sphere each direction is held
    by dozens of points a float32 rounding apart, so the scan's float32 products tie and only
    its rounding bound keeps the true maximum among the candidates (as in the test above)."""
    rng = np.random.default_rng(3)
    dirs = np.maximum(rng.normal(size=(40, 16)), 0) + 0.01
    norms = rng.lognormal(0.0, 2.0, size=(40, 75))
    F = (dirs[:, None, :] * norms[:, :, None]).reshape(-1, 16).astype(np.float32)
    pair = HullPair(ConvexHullIndex(F, CONFIG, device="cpu"), CONFIG, device="cpu")
    X = (np.maximum(rng.normal(size=(60, 16)), 0) + rng.normal(scale=0.3, size=(60, 16))).astype(
        np.float32
    )
    h, s = pair.query(X, threads=2)
    _assert_lower_within_own_bound(s, pair.sphere_view.rows().astype(np.float64), to_sphere(X))
    assert s.converged.all()


def _maps(d: int, seed: int) -> list[np.ndarray]:
    """A half-whitening of a random covariance (as guard.detectors.whitened builds) and an
    ill-conditioned map (singular values over six orders of magnitude)."""
    rng = np.random.default_rng(seed)
    C = np.cov(rng.normal(size=(4 * d, d)) * rng.lognormal(0, 1.0, d), rowvar=False)
    e, V = np.linalg.eigh(C)
    U, _, Vt = np.linalg.svd(rng.normal(size=(d, d)))
    return [(V * e**-0.25) @ V.T, (U * np.logspace(0, -6, d)) @ Vt]


def _view_case(N: int, d: int, seed: int):
    F, Q, pair = _case(N, d, seed)
    views = [HullView(pair.raw.points, A, CONFIG, device="cpu") for A in _maps(d, seed)]
    return F, Q, pair, views


@needs_core
@pytest.mark.parametrize(("N", "d", "seed"), [(3000, 16, 0), (2000, 48, 1)])
def test_views_intervals_contain_the_exact_distances(N: int, d: int, seed: int) -> None:
    F, Q, pair, views = _view_case(N, d, seed)
    assert all(v.fusable(pair.raw) for v in views)
    h, s, vs, _ = pair.query_all(Q, None, views, top_support=4, threads=2)
    for v, res in zip(views, vs, strict=True):
        P = v.rows().astype(np.float64)
        for i, x in enumerate(v.directions(Q)):
            ref = reference.hull_distance(P, x)
            assert res.lower[i] <= ref + 1e-5 * max(1.0, ref), (i, res.lower[i], ref)
            assert res.upper[i] >= ref - 1e-5 * max(1.0, ref), (i, res.upper[i], ref)
            assert res.converged[i], i
            assert res.upper[i] - res.lower[i] <= 1e-3 * res.upper[i] + 1e-7
        assert res.support_idx.shape == (len(Q), 0)
    # the raw and the spherical hull are those of the pair alone, up to the certified rounding
    h0, s0 = pair.query(Q, top_support=4, threads=2)
    for a, b in ((h, h0), (s, s0)):
        np.testing.assert_allclose(a.upper, b.upper, rtol=2e-3, atol=1e-7)


@needs_core
@pytest.mark.parametrize(("N", "d", "seed"), [(3000, 16, 0), (2000, 48, 1)])
def test_views_lower_bounds_hold_for_their_own_direction(N: int, d: int, seed: int) -> None:
    """As test_pair_lower_bounds_hold_for_their_own_direction, for views of maps: their scans
    multiply the raw rows by fl32(A g) and fl32(1 / |t A|), and a rounding bound that does not
    cover it lets the scan miss the maximum."""
    F, Q, pair, views = _view_case(N, d, seed)
    rng = np.random.default_rng(seed + 9)
    X = (np.maximum(rng.normal(size=(40, d)), 0) * rng.lognormal(0, 1.5, (40, 1))).astype(
        np.float32
    )
    X = np.vstack([Q, X])
    for threads in (1, 2):
        _, _, vs, _ = pair.query_all(X, None, views, threads=threads)
        for v, res in zip(views, vs, strict=True):
            _assert_lower_within_own_bound(res, v.rows().astype(np.float64), v.directions(X))
            assert np.all(res.lower <= res.upper)


@needs_core
def test_views_lower_bounds_hold_with_near_ties() -> None:
    """Training points along few directions at many norms (as for the sphere above): after the
    map each direction is held by dozens of points a float32 rounding apart, so only the
    rounding bound of the mapped products keeps the true maximum among the candidates."""
    rng = np.random.default_rng(3)
    dirs = np.maximum(rng.normal(size=(40, 16)), 0) + 0.01
    norms = rng.lognormal(0.0, 2.0, size=(40, 75))
    F = (dirs[:, None, :] * norms[:, :, None]).reshape(-1, 16).astype(np.float32)
    pair = HullPair(ConvexHullIndex(F, CONFIG, device="cpu"), CONFIG, device="cpu")
    views = [HullView(pair.raw.points, A, CONFIG, device="cpu") for A in _maps(16, 3)]
    X = (np.maximum(rng.normal(size=(60, 16)), 0) + rng.normal(scale=0.3, size=(60, 16))).astype(
        np.float32
    )
    _, _, vs, _ = pair.query_all(X, None, views, threads=2)
    for v, res in zip(views, vs, strict=True):
        _assert_lower_within_own_bound(res, v.rows().astype(np.float64), v.directions(X))
        assert res.converged.all()


@needs_core
@pytest.mark.parametrize("seed", [0, 1])
def test_views_lower_bounds_hold_where_the_map_shrinks_the_points(seed: int) -> None:
    """The worst case of the mapped products' rounding: points t with |t A| ~ 1e-4 |t| (t =
    (b / sigma) U^T for A = U diag(sigma) V^T, so t A = b V^T), many along each mapped direction.
    A float32 product's rounding scales with |A g| |t|, the product itself with |g| |t A|; the
    certificate's bound carries kappa = max |t| / |t A| for that (without it, this fails for
    every seed tried)."""
    rng = np.random.default_rng(seed)
    d = 16
    U, _, Vt = np.linalg.svd(rng.normal(size=(d, d)))
    sigma = np.logspace(0, -4, d)
    A = (U * sigma) @ Vt
    t = ((np.abs(rng.normal(size=(40, d))) + 0.01) / sigma) @ U.T
    norms = rng.lognormal(0.0, 2.0, size=(40, 75))
    F = (t[:, None, :] * norms[:, :, None]).reshape(-1, d).astype(np.float32)
    pair = HullPair(ConvexHullIndex(F, CONFIG, device="cpu"), CONFIG, device="cpu")
    view = HullView(pair.raw.points, A, CONFIG, device="cpu")
    assert view.kappa > 1e3
    X = ((np.abs(rng.normal(size=(60, d))) + rng.normal(scale=0.3, size=(60, d))) / sigma) @ U.T
    X = X.astype(np.float32)
    _, _, (res,), _ = pair.query_all(X, None, [view], threads=2)
    _assert_lower_within_own_bound(res, view.rows().astype(np.float64), view.directions(X))
    assert res.converged.all()


@needs_core
def test_views_agree_with_separate_queries_and_threads_do_not_matter() -> None:
    F, Q, pair, views = _view_case(3000, 16, 0)
    regions = UnionOfBalls(pair.raw.points, _radii(F, 1), device="cpu")
    one = pair.query_all(Q, regions, views, threads=1)
    two = pair.query_all(Q, regions, views, threads=2)
    for a, b in zip([one[0], one[1], *one[2]], [two[0], two[1], *two[2]], strict=True):
        for f in fields(a):
            x, y = getattr(a, f.name), getattr(b, f.name)
            assert (x is None and y is None) or np.array_equal(x, y), f.name
    for f in fields(one[3]):
        assert np.array_equal(getattr(one[3], f.name), getattr(regions.query(Q), f.name))
    for v, fused in zip(views, one[2], strict=True):
        alone = v.query(Q)
        assert np.all(fused.lower <= alone.upper * (1 + 1e-12) + 1e-12)
        assert np.all(alone.lower <= fused.upper * (1 + 1e-12) + 1e-12)
    # one query at a time: the same certified intervals
    for i in range(0, len(Q), 4):
        _, _, vs, _ = pair.query_all(Q[i : i + 1], None, views)
        for res, whole in zip(vs, one[2], strict=True):
            assert res.lower[0] <= whole.upper[i] * (1 + 1e-12) + 1e-12
            assert whole.lower[i] <= res.upper[0] * (1 + 1e-12) + 1e-12


def test_views_of_other_points_or_without_the_core_are_queried_alone() -> None:
    F, Q, pair = _case(3000, 16, 0)
    A = _maps(16, 0)[0]
    other = HullView(pair.raw.points.copy(), A, CONFIG, device="cpu")
    assert not other.fusable(pair.raw)
    _, _, (res,), _ = pair.query_all(Q, None, [other])
    alone = other.query(Q)
    for f in fields(res):
        x, y = getattr(res, f.name), getattr(alone, f.name)
        assert (x is None and y is None) or np.array_equal(x, y), f.name
    config = HullConfig(subsample=256, pool_size=128, add_per_round=16, engine="numpy")
    slow = HullPair(ConvexHullIndex(F[:500], config, device="cpu"), config, device="cpu")
    view = HullView(slow.raw.points, A, config, device="cpu")
    assert not slow.fused
    _, _, (res,), _ = slow.query_all(Q[:4], None, [view])
    for i, x in enumerate(view.directions(Q[:4])):
        ref = reference.hull_distance(view.rows().astype(np.float64), x)
        assert res.lower[i] <= ref + 1e-5 and res.upper[i] >= ref - 1e-5


def test_view_rejects_bad_arguments() -> None:
    F = np.ones((10, 4), dtype=np.float32)
    with pytest.raises(GeometryError, match="float32 points"):
        HullView(F.astype(np.float64))
    with pytest.raises(GeometryError, match="transform"):
        HullView(F, np.eye(3))
    with pytest.raises(GeometryError, match="maps a training point to 0"):
        HullView(F, np.zeros((4, 4)))
    with pytest.raises(GeometryError, match="transform"):
        HullView(F, np.full((4, 4), np.nan))


@needs_core
def test_concurrent_callers_get_the_answers_of_one_caller() -> None:
    """Callers on several threads query the same hulls at once, each on two threads of the
    core (the second caller of a core works in scratch of its own): every answer is the one a
    single caller gets, bit for bit."""
    from concurrent.futures import ThreadPoolExecutor

    F, Q, pair, views = _view_case(3000, 16, 0)
    regions = UnionOfBalls(pair.raw.points, _radii(F, 1), device="cpu")
    alone = pair.query_all(Q, regions, views, threads=2)
    with ThreadPoolExecutor(3) as ex:
        runs = list(ex.map(lambda _: pair.query_all(Q, regions, views, threads=2), range(6)))
    for run in runs:
        for a, b in zip([alone[0], alone[1], *alone[2]], [run[0], run[1], *run[2]], strict=True):
            for f in fields(a):
                x, y = getattr(a, f.name), getattr(b, f.name)
                assert (x is None and y is None) or np.array_equal(x, y), f.name
        for f in fields(alone[3]):
            assert np.array_equal(getattr(alone[3], f.name), getattr(run[3], f.name))
