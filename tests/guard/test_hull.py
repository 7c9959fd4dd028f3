"""Certified hull distance (eq. 20-25): the interval must contain the full QP's value."""

from __future__ import annotations

import re
from functools import cache

import faiss
import numpy as np
import pytest

from guard.geometry.errors import GeometryError
from guard.geometry.hull import ConvexHullIndex, HullConfig, _top_indices
from guard.geometry.qp import min_norm_point
from tests.reference import solvers as reference

# Options: each full-round scan; a small subsample and pool force several full rounds. Every key
# but "device" is a HullConfig field.
CONFIGS: dict[str, dict] = {
    "pool-exact": dict(scan="exact"),  # the compiled core where it is built (engine "auto")
    "pool-exact-numpy": dict(scan="exact", engine="numpy"),
    "pool-exact-numpy-small-pool": dict(
        scan="exact", engine="numpy", subsample=100, pool_size=64, add_per_round=8
    ),
    "pool-pca": dict(scan="pca", pca_k=3),
    "pool-pca-small-pool": dict(scan="pca", pca_k=5, subsample=100, pool_size=64, add_per_round=8),
    "pool-exact-small-pool": dict(scan="exact", subsample=100, pool_size=64, add_per_round=8),
    # the torch code path of guard.geometry.accel (what runs on a CUDA GPU), here on the CPU
    "pool-exact-torch": dict(
        scan="exact", device="torch", subsample=100, pool_size=64, add_per_round=8
    ),
    "pool-pca-torch": dict(
        scan="pca", pca_k=5, device="torch", subsample=100, pool_size=64, add_per_round=8
    ),
}


def _index(T: np.ndarray, config: str = "pool-exact", **settings: object) -> ConvexHullIndex:
    """The index over ``T`` (N, d) for the named option set of CONFIGS, with ``settings``
    overriding its HullConfig fields."""
    kw = {**CONFIGS[config], **settings}
    device = kw.pop("device", "auto")
    return ConvexHullIndex(T, HullConfig(**kw), device=device)


def _relu_points(seed: int, N: int, d: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (np.maximum(rng.normal(size=(N, d)), 0) * rng.gamma(2.0, 1.0, size=(N, 1))).astype(
        np.float32
    )


@cache
def _qp_case(N: int, d: int, seed: int) -> tuple[np.ndarray, np.ndarray, tuple[float, ...]]:
    """Training points, queries and the reference distances (full QP, solved once per case)."""
    T = _relu_points(seed, N, d)
    rng = np.random.default_rng(seed + 100)
    Q = np.maximum(rng.normal(size=(8, d)) * 2.0, 0)
    return T, Q, tuple(reference.hull_distance(T, q) for q in Q)


@pytest.mark.parametrize("config", sorted(CONFIGS))
@pytest.mark.parametrize("N,d,seed", [(1500, 8, 0), (2000, 32, 1), (400, 64, 2)])
def test_interval_contains_full_qp(N: int, d: int, seed: int, config: str) -> None:
    T, Q, refs = _qp_case(N, d, seed)
    idx = _index(T, config, k=32, tol=1e-3)
    h = idx.query(Q)
    for qi in range(len(Q)):
        ref = refs[qi]
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


@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_inside_and_training_points_get_zero(config: str) -> None:
    T = _relu_points(3, 1000, 16)
    rng = np.random.default_rng(0)
    inside = []
    for _ in range(5):  # random convex combinations of many training points
        a = rng.dirichlet(np.ones(200))
        inside.append(a @ T[rng.choice(len(T), 200, replace=False)].astype(np.float64))
    Q = np.vstack([np.array(inside), T[[0, 17, 999]].astype(np.float64)])
    h = _index(T, config, k=16).query(Q)
    assert (h.lower == 0).all()
    assert (h.upper[:5] < 1e-6).all()
    assert (h.upper[5:] == 0).all()
    assert h.support_idx[5, 0] == 0 and h.support_alpha[5, 0] == pytest.approx(1.0)


@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_rounds_add_points_the_prefilter_missed(config: str) -> None:
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
    h = _index(T, config, k=8).query(q[None])
    ref = reference.hull_distance(T, q)
    assert h.qp_solves[0] > 1  # the first working set was not enough
    assert h.lower[0] <= ref + 1e-7 <= h.upper[0] + 2e-7
    assert h.upper[0] == pytest.approx(ref, rel=1e-3)
    assert (h.support_idx[0][h.support_idx[0] >= 0] >= 500).any()


@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_bounds_certified_for_large_offsets(config: str) -> None:
    """float32 scan with features far from the origin: the rounding bound keeps lower valid."""
    T = _relu_points(5, 800, 16) + 300.0
    rng = np.random.default_rng(1)
    Q = T[:6].astype(np.float64) + rng.normal(size=(6, 16)) * 0.05
    h = _index(T, config, k=32, tol=1e-3).query(Q)
    for qi in range(len(Q)):
        ref = reference.hull_distance(T, Q[qi])
        assert h.lower[qi] <= ref + 1e-6
        assert h.upper[qi] >= ref - 1e-6


@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_budget_exhausted_still_bounds(config: str) -> None:
    T = _relu_points(6, 1500, 24)
    q = np.maximum(np.random.default_rng(2).normal(size=24) * 3, 0)
    h = _index(T, config, k=2, max_rounds=1, add_per_round=1).query(q[None])
    ref = reference.hull_distance(T, q)
    assert h.rounds[0] == 1
    assert h.lower[0] <= ref + 1e-7 <= h.upper[0] + 2e-7


def test_min_norm_point_matches_reference() -> None:
    rng = np.random.default_rng(8)
    for m, d in ((5, 3), (40, 6), (100, 10)):
        P = rng.normal(size=(m, d)) + 1.5
        a = min_norm_point(P)
        assert (a >= 0).all() and a.sum() == pytest.approx(1.0)
        ref = reference.hull_distance(P, np.zeros(d))
        assert np.linalg.norm(a @ P) == pytest.approx(ref, rel=1e-7, abs=1e-9)


def test_support_weights_are_a_convex_combination() -> None:
    T = _relu_points(9, 600, 10)
    Q = np.maximum(np.random.default_rng(3).normal(size=(4, 10)) * 2, 0)
    h = ConvexHullIndex(T, HullConfig(k=32)).query(Q, top_support=600)
    for qi in range(len(Q)):
        ok = h.support_idx[qi] >= 0
        assert h.support_alpha[qi][ok].sum() == pytest.approx(1.0)
        p = h.support_alpha[qi][ok] @ T[h.support_idx[qi][ok]].astype(np.float64)
        np.testing.assert_allclose(p, h.projection[qi], atol=1e-9)


# ------------------------------------------------------------------ PCA-bounded full rounds
def _adversarial(kind: str, seed: int = 0) -> np.ndarray:
    """Training sets built to stress the PCA bound and its rounding-error terms."""
    rng = np.random.default_rng(seed)
    N, d = 3000, 24
    low_rank = rng.normal(size=(N, 4)) @ rng.normal(size=(4, d))
    if kind == "low-rank+noise":
        T = low_rank + 0.05 * rng.normal(size=(N, d))
    elif kind == "huge-residuals":  # a few points far outside the principal subspace
        T = low_rank + 0.01 * rng.normal(size=(N, d))
        T[rng.choice(N, 20, replace=False)] += 300.0 * rng.normal(size=(20, d))
    elif kind == "offset-mean-large-norm":  # everything far from the origin: cancellation
        T = 1e4 + low_rank + 0.1 * rng.normal(size=(N, d))
    elif kind == "near-ties":  # many points on one hyperplane, some a hair above or below
        T = rng.normal(size=(N, d))
        T[:, 0] = 5.0
        T[:200, 0] += rng.choice([-1.0, 1.0], 200) * 1e-6
        T[200:400] = T[200]  # exact duplicates
    elif kind == "relu":
        T = _relu_points(seed, N, d).astype(np.float64)
    else:
        raise ValueError(kind)
    return T.astype(np.float32)


def _exact_max(T: np.ndarray, g: np.ndarray) -> float:
    """Brute force in extended precision (float32 points are exact there)."""
    return float((T.astype(np.longdouble) @ g.astype(np.longdouble)).max())


KINDS = ["low-rank+noise", "huge-residuals", "offset-mean-large-norm", "near-ties", "relu"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("k", [1, 4, 12])
def test_pca_certified_max_equals_brute_force(kind: str, k: int) -> None:
    T = _adversarial(kind)
    idx = ConvexHullIndex(T, HullConfig(scan="pca", pca_k=k))
    assert idx.scan == "pca" and idx.pca_k == k
    rng = np.random.default_rng(k)
    U = idx._pca.U
    dirs = [rng.normal(size=T.shape[1]) for _ in range(6)]
    dirs += [U[:, 0], U @ rng.normal(size=k)]  # inside the principal subspace
    r = rng.normal(size=T.shape[1])
    dirs.append(r - U @ (U.T @ r))  # orthogonal to it: only the residual bound is left
    dirs += [1e-8 * dirs[0], 1e6 * dirs[1], np.eye(T.shape[1])[0]]
    for g in dirs:
        ref = _exact_max(T, g)
        scale = float(np.linalg.norm(g)) * idx.max_norm
        m_pca = idx.max_along(g)
        assert m_pca >= ref - 1e-15 * scale  # certified: never below the true maximum
        assert m_pca <= ref + 1e-12 * scale  # and the exact maximum (up to float64 slack)
        m_exact = idx._certified_max(T @ g.astype(np.float32), g, g.astype(np.float32))
        assert m_exact == pytest.approx(m_pca, rel=0, abs=1e-12 * scale)


@pytest.mark.parametrize("kind", KINDS)
def test_pca_bound_below_any_threshold_is_certified(kind: str) -> None:
    """For any target theta: m >= the true maximum; m is exact when the maximum exceeds theta;
    only the points whose bound exceeds theta are evaluated."""
    T = _adversarial(kind, seed=1)
    idx = ConvexHullIndex(T, HullConfig(scan="pca", pca_k=4))
    rng = np.random.default_rng(2)
    for _ in range(5):
        g = rng.normal(size=T.shape[1])
        ref = _exact_max(T, g)
        scale = float(np.linalg.norm(g)) * idx.max_norm
        h = g @ idx._pca.U
        z = idx._pca.C @ h.astype(np.float32)
        for theta in (
            ref - 0.5 * abs(ref) - 1,
            ref - 1e-6 * scale,
            ref,
            ref + 1e-3 * scale,
            ref + 10 * scale,
        ):
            b = idx._pca_bound(g, h, z, theta)
            m, cand = b.m, b.candidates
            assert m >= ref - 1e-15 * scale and b.bound_all >= ref - 1e-15 * scale
            if ref > theta:
                assert m <= ref + 1e-12 * scale
            else:  # no point above theta: m stays at or below theta (plus rounding)
                assert m <= max(theta, ref) + 1e-12 * scale
            # every point left out is certified below theta by its bound
            assert len(cand) <= len(T)
            out = np.setdiff1d(np.arange(len(T)), cand)
            if len(out):
                vals = T[out].astype(np.float64) @ g
                assert vals.max() <= theta + 1e-12 * scale


def test_all_paths_and_the_previous_version_agree() -> None:
    """Mid-size set with a subsample, several full rounds, PCA and exact scans, and the frozen
    previous algorithm (tests/reference/hull_v2.py: FAISS kNN start, a full scan every round): all
    intervals overlap and the upper bounds agree to tol."""
    from tests.reference import hull_v2

    rng = np.random.default_rng(11)
    T = (
        rng.normal(size=(6000, 6)) @ rng.normal(size=(6, 20)) + 0.05 * rng.normal(size=(6000, 20))
    ).astype(np.float32)
    Q = np.vstack(
        [
            T[:5].astype(np.float64) + rng.normal(size=(5, 20)) * 0.5,
            np.abs(rng.normal(size=(5, 20))) * 3,
        ]
    )
    res = {}
    res["previous"] = hull_v2.ConvexHullIndex(T).query(Q)
    for name, kw in {
        "exact": dict(scan="exact"),
        "pca": dict(scan="pca", pca_k=6),
        "auto": dict(scan="auto"),
        "small": dict(scan="pca", pca_k=3, subsample=300, pool_size=128),
    }.items():
        res[name] = ConvexHullIndex(T, HullConfig(**kw)).query(Q)
        assert res[name].converged.all(), name
    for a in res:
        for b in res:
            assert (res[a].lower <= res[b].upper * (1 + 1e-9) + 1e-12).all(), (a, b)
        np.testing.assert_allclose(res[a].upper, res["previous"].upper, rtol=1.1e-3, atol=1e-9)
    assert (res["pca"].exact_fraction <= 1).all()
    assert (res["exact"].exact_fraction == 1).all()


def test_auto_scan_choice() -> None:
    rng = np.random.default_rng(3)
    low_rank = (
        rng.normal(size=(5000, 4)) @ rng.normal(size=(4, 32)) + 0.01 * rng.normal(size=(5000, 32))
    ).astype(np.float32)
    auto = HullConfig(scan="auto")
    assert ConvexHullIndex(low_rank).scan == "exact"  # the default holds no extra memory
    idx = ConvexHullIndex(low_rank, auto)
    assert idx.scan == "pca" and idx.pca_k <= 16 and idx.config.scan == "auto"
    iso = rng.normal(size=(5000, 32)).astype(np.float32)  # no principal subspace: exact
    assert ConvexHullIndex(iso, auto).scan == "exact"
    assert ConvexHullIndex(low_rank[:1000], auto).scan == "exact"  # tiny: exact


def test_training_point_lookup_handles_negative_zero() -> None:
    T = _relu_points(12, 500, 8)
    T[7] = 0.0
    q = -np.zeros(8)
    idx = ConvexHullIndex(T)
    h = idx.query(np.vstack([q, T[3].astype(np.float64)]))
    assert (h.upper == 0).all() and (h.lower == 0).all()
    assert h.support_idx[1, 0] == 3 or np.array_equal(T[h.support_idx[1, 0]], T[3])


# ------------------------------------------------------------------------ settings and API
@pytest.mark.parametrize(
    "field,value,expected",
    [
        ("k", 0, "integer >= 1"),
        ("k", 2.0, "integer >= 1"),
        ("k", True, "integer >= 1"),
        ("tol", 0.0, "in (0, 1)"),
        ("tol", 1.0, "in (0, 1)"),
        ("tol", float("nan"), "in (0, 1)"),
        ("atol", -1e-9, "finite and >= 0"),
        ("atol", float("inf"), "finite and >= 0"),
        ("max_rounds", 0, "integer >= 1"),
        ("add_per_round", -3, "integer >= 1"),
        ("time_budget_s", 0.0, "> 0 seconds or None"),
        ("scan", "fast", "one of"),
        ("pca_k", 0, "integer >= 1 or None"),
        ("pca_residual", 1.5, "in (0, 1)"),
        ("pool_size", 0, "integer >= 1"),
        ("subsample", 0, "integer >= 1 or None"),
        ("seed", -1, "integer >= 0"),
        ("tol", "0.1", "in (0, 1)"),
        ("engine", "gpu", "one of"),
    ],
)
def test_config_rejects_bad_settings(field: str, value: object, expected: str) -> None:
    with pytest.raises(GeometryError, match=rf"HullConfig\.{field} must .*{re.escape(expected)}"):
        HullConfig(**{field: value})


def test_config_defaults_and_plain_types() -> None:
    c = HullConfig()
    assert (
        c.k,
        c.tol,
        c.atol,
        c.max_rounds,
        c.add_per_round,
        c.time_budget_s,
        c.scan,
        c.pca_k,
        c.pca_residual,
        c.pool_size,
        c.subsample,
        c.seed,
        c.engine,
    ) == (64, 1e-3, 1e-7, 100, 32, None, "exact", None, 0.01, 1024, None, 0, "auto")
    n = HullConfig(k=np.int64(8), tol=np.float32(0.25), max_rounds=np.int32(3), atol=0)
    assert type(n.k) is int and type(n.tol) is float and type(n.atol) is float
    assert n == HullConfig(k=8, tol=0.25, max_rounds=3, atol=0.0)  # float32 0.25 is exact
    with pytest.raises(AttributeError):
        n.k = 9  # type: ignore[misc]


def test_from_index_equals_points_and_shares_storage() -> None:
    T = _relu_points(13, 700, 12)
    Q = np.maximum(np.random.default_rng(4).normal(size=(6, 12)) * 2, 0)
    cfg = HullConfig(k=16, subsample=100, pool_size=64, add_per_round=8)
    a = ConvexHullIndex(T, cfg, device="cpu")
    flat = faiss.IndexFlatL2(12)
    flat.add(T)
    b = ConvexHullIndex.from_index(flat, cfg, device="cpu")
    assert b.config is cfg and b.index is flat and len(b) == 700 and b.dim == 12
    assert np.shares_memory(b.points, faiss.rev_swig_ptr(flat.get_xb(), 700 * 12))
    ra, rb = a.query(Q), b.query(Q)
    for f in (
        "upper",
        "lower",
        "projection",
        "support_idx",
        "support_alpha",
        "rounds",
        "converged",
        "qp_solves",
        "exact_fraction",
    ):
        np.testing.assert_array_equal(getattr(ra, f), getattr(rb, f), err_msg=f)
    # an index read back from its bytes (as from an artifact's index.faiss)
    c = ConvexHullIndex.from_index(faiss.deserialize_index(faiss.serialize_index(flat)), cfg)
    np.testing.assert_array_equal(c.query(Q).upper, ra.upper)


def test_constructor_rejects_bad_input() -> None:
    T = _relu_points(14, 50, 4)
    with pytest.raises(GeometryError, match="expected a HullConfig"):
        ConvexHullIndex(T, {"k": 8})  # type: ignore[arg-type]
    with pytest.raises(GeometryError, match=r"training features \(N, d\)"):
        ConvexHullIndex(T[0])
    with pytest.raises(GeometryError, match="NaN or Inf"):
        ConvexHullIndex(np.full((3, 2), np.nan))
    with pytest.raises(GeometryError, match="non-empty exact FAISS IndexFlat"):
        ConvexHullIndex.from_index(faiss.IndexFlatL2(4))
    with pytest.raises(GeometryError, match="non-empty exact FAISS IndexFlat"):
        ConvexHullIndex.from_index(faiss.IndexHNSWFlat(4, 8))
    with pytest.raises(GeometryError, match="expected a FAISS IndexFlat"):
        ConvexHullIndex.from_index(T)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        ConvexHullIndex(T, k=8)  # type: ignore[call-arg]  # the old keyword API is gone


@pytest.mark.parametrize("n,m", [(10, 3), (1000, 64), (100_000, 64), (50_000, 2048)])
def test_top_indices(n: int, m: int) -> None:
    rng = np.random.default_rng(n)
    v = rng.normal(size=n).astype(np.float32)
    v[: n // 10] = v[0]  # ties
    top = _top_indices(v, m)
    assert len(top) == min(m, n) and len(np.unique(top)) == len(top)
    assert v[top].min() >= np.sort(v)[-min(m, n)]
    floor = float(np.sort(v)[-m // 2]) if m > 1 else None
    top = _top_indices(v, m, floor)
    assert (v[top] > floor).all() and len(top) == (v > floor).sum()
