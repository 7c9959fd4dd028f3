"""The guard's combined OOD score (guard.detectors.CombinedScore): conformal p-value validity,
monotonicity, exact persistence, input checks, and every component against a direct numpy
computation."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from scipy.stats import beta

from guard import Guard
from guard.detectors import (
    COMBINE,
    COMPONENTS,
    FDBD,
    KNN,
    MIN_CALIB,
    CombinedScore,
    Evidence,
    HullDistance,
    LowTail,
    WhitenedMetricSphereHull,
    WhitenedSphereHull,
    to_sphere,
)
from guard.detectors.combined import DEFAULT_COMBINE, DEFAULT_COMPONENTS
from guard.errors import InputError, NotFittedError
from guard.geometry.margins import compute_margins

ALL = COMPONENTS  # every component at once


def _centres(seed: int, n: int = 3, f: int = 8) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.gamma(2.0, 2.0, size=(n, f))
    W = centres - centres.mean(0)
    b = -0.5 * (centres**2).sum(1) + 0.5 * (centres.mean(0) ** 2).sum()
    return centres, W, b


def _draw(rng, centres, m):
    """``m`` nonnegative (ReLU-like) features from the class blobs, and their labels."""
    y = rng.integers(0, len(centres), size=m)
    return np.maximum(centres[y] + rng.normal(size=(m, centres.shape[1])), 0.0), y


def _closed_form_margins(F, W, b):
    """Hyperplane distances to every boundary, NaN at the prediction (a valid margins array)."""
    Z = F @ W.T + b
    pred = Z.argmax(1)
    den = np.linalg.norm(W[:, None] - W[None], axis=2)
    np.fill_diagonal(den, 1.0)
    M = np.abs(Z[np.arange(len(F)), pred][:, None] - Z) / den[pred]
    M[np.arange(len(F)), pred] = np.nan
    return M


def _cheap(F, W, b):
    """Evidence without the guard: stand-in hull distances (raw and on the sphere),
    hyperplane-distance margins."""
    M = _closed_form_margins(F, W, b)
    u = np.ones(F.shape[1]) / np.sqrt(F.shape[1])
    return Evidence(
        features=F,
        logits=F @ W.T + b,
        hull=np.linalg.norm(F - 2.0, axis=1),
        d_min=np.nanmin(M, axis=1),
        margins=M,
        sphere=np.linalg.norm(to_sphere(F) - u, axis=1),
    )


def _geometry(guard, F):
    return Evidence.from_scores(guard.score_features(F.astype(np.float32)), F)


# ------------------------------------------------------------------ validity of the p-value
def test_p_value_is_valid_on_exchangeable_id_data():
    """Fresh calibration data and one fresh ID test point per draw: the indicators p <= a are
    independent Bernoulli with P = floor(a (n + 1)) / (n + 1) <= a (continuous scores), so the
    realised share must lie in the binomial (Clopper-Pearson, 99.9%) interval around it."""
    centres, W, b = _centres(0)
    rng = np.random.default_rng(1)
    F, y = _draw(rng, centres, 400)
    draws, n_cal = 2000, 200
    hits = {0.05: 0, 0.1: 0, 0.2: 0}
    n_p = None
    for _ in range(draws):
        Fc, _ = _draw(rng, centres, n_cal + 1)  # calibration + one test point, exchangeable
        ev = _cheap(Fc, W, b)
        cal, test = ev.take(np.arange(n_cal)), ev.take(np.arange(n_cal, n_cal + 1))
        sc = CombinedScore(seed=int(rng.integers(1 << 30))).fit(F, y, W, b, cal)
        _, p = sc.score(test)
        n_p = sc.calib_scores_.size
        for a in hits:
            hits[a] += int(p[0] <= a)
    assert n_p == n_cal // 2
    for a, k in hits.items():
        expect = np.floor(a * (n_p + 1) + 1e-9) / (n_p + 1)
        lo = beta.ppf(0.0005, k, draws - k + 1)
        hi = beta.ppf(0.9995, k + 1, draws - k)
        assert lo <= expect <= hi, (a, k / draws, expect, lo, hi)
        assert k / draws <= a + 3 * np.sqrt(a * (1 - a) / draws)


def test_p_value_is_the_conformal_count():
    centres, W, b = _centres(2)
    rng = np.random.default_rng(3)
    F, y = _draw(rng, centres, 300)
    Fc, _ = _draw(rng, centres, 300)
    Fq, _ = _draw(rng, centres, 50)
    sc = CombinedScore(("hull", "fdbd", "mahalanobis", "energy")).fit(F, y, W, b, _cheap(Fc, W, b))
    s, p = sc.score(_cheap(Fq, W, b))
    cal = sc.calib_scores_
    ref = np.array([(1 + np.sum(cal >= v)) / (cal.size + 1) for v in s])
    np.testing.assert_array_equal(p, ref)
    # the calibration half's own scores get p-values in [1/(n+1), 1], the largest the smallest
    _, pc = sc.score(_cheap(Fc, W, b).take(np.arange(5)))
    assert np.all((pc >= 1 / (cal.size + 1)) & (pc <= 1))


# ------------------------------------------------------------------ monotonicity
def test_far_points_score_higher_than_training_points_with_the_real_geometry():
    centres, W, b = _centres(4)
    rng = np.random.default_rng(5)
    F, y = _draw(rng, centres, 500)
    Fc, _ = _draw(rng, centres, 200)
    g = Guard(hull_k=16, calib_fraction=0).fit_features(F.astype(np.float32), W, b, y)
    cal, train = _geometry(g, Fc), _geometry(g, F[:200])
    far = _geometry(g, F[:50] * 6.0 + 20.0)  # far outside the training hull
    assert np.all(train.hull < 1e-3 * np.abs(F).max())  # training points: in the hull
    # every rule with the hulls, fDBD and ViM, and the default score (min-variance weights
    # fitted without the raw hull can favour components that miss these points)
    cases = [CombinedScore(("sphere_hull", "hull", "fdbd", "vim"), c) for c in COMBINE]
    for sc in [*cases, CombinedScore()]:
        combine = sc.combine
        sc.fit(F, y, W, b, cal)
        s_train, p_train = sc.score(train)
        s_far, p_far = sc.score(far)
        assert s_far.min() > s_train.max(), combine
        assert np.all(p_far == 1 / (sc.calib_scores_.size + 1)), combine
        assert np.median(p_train) > 0.3, combine


@pytest.mark.parametrize("combine", COMBINE)
def test_score_is_monotone_in_every_component(combine):
    """The combined score never decreases when one raw component increases."""
    centres, W, b = _centres(6)
    rng = np.random.default_rng(7)
    F, y = _draw(rng, centres, 300)
    Fc, _ = _draw(rng, centres, 200)
    sc = CombinedScore(ALL, combine).fit(F, y, W, b, _cheap(Fc, W, b))
    assert np.all(sc.weights_ >= 0) and sc.weights_.sum() == pytest.approx(1.0)
    Fq, _ = _draw(rng, centres, 100)
    R = sc._raw(_cheap(Fq, W, b))
    base = sc._combine(sc._normal(R))
    for k in range(R.shape[1]):
        for step in (1e-3, 0.1, 10.0, 1e3):
            R2 = R.copy()
            R2[:, k] += step * (np.abs(R[:, k]).mean() + 1e-3)
            assert np.all(sc._combine(sc._normal(R2)) >= base - 1e-12), (combine, k, step)
    # the hull distance drives the score: a larger hull distance, a larger score
    q = _cheap(Fq, W, b)
    s0, p0 = CombinedScore(("hull",), combine).fit(F, y, W, b, _cheap(Fc, W, b)).score(q)
    q = replace(q, hull=q.hull + 100.0)
    s1, p1 = CombinedScore(("hull",), combine).fit(F, y, W, b, _cheap(Fc, W, b)).score(q)
    assert np.all(s1 > s0) and np.all(p1 <= p0)


def test_min_variance_weights():
    """Simplex-constrained minimum of w' C w: the normalised C^-1 1 when that is positive."""
    centres, W, b = _centres(8)
    rng = np.random.default_rng(9)
    F, y = _draw(rng, centres, 300)
    Fc, _ = _draw(rng, centres, 400)
    comps = ("hull", "fdbd", "mahalanobis")
    sc = CombinedScore(comps, "min_variance").fit(F, y, W, b, _cheap(Fc, W, b))
    C = sc.cov_
    w = np.linalg.solve(C, np.ones(3))
    if np.all(w > 0):
        np.testing.assert_allclose(sc.weights_, w / w.sum(), atol=1e-6)
    # no other point of the simplex has a smaller variance
    grid = rng.dirichlet(np.ones(3), size=2000)
    var = np.einsum("ij,jk,ik->i", grid, C, grid)
    assert sc.weights_ @ C @ sc.weights_ <= var.min() + 1e-9
    # the combined ID score is standardised on the fit half
    assert sc.scale_ == pytest.approx(np.sqrt(sc.weights_ @ C @ sc.weights_))


# ------------------------------------------------------------------ persistence
@pytest.mark.parametrize("combine", COMBINE)
def test_to_arrays_from_arrays_exact_round_trip(tmp_path, combine):
    centres, W, b = _centres(10)
    rng = np.random.default_rng(11)
    F, y = _draw(rng, centres, 400)
    Fc, _ = _draw(rng, centres, 150)
    Fq, _ = _draw(rng, centres, 60)
    Fq[:10] *= 5.0  # some beyond the top knots: the tail extrapolation round-trips too
    for comps in (("hull", "fdbd", "mahalanobis"), ALL):
        sc = CombinedScore(comps, combine, seed=3).fit(F, y, W, b, _cheap(Fc, W, b))
        arrays = sc.to_arrays()
        assert all(isinstance(v, np.ndarray) and v.dtype != object for v in arrays.values())
        np.savez(tmp_path / "ood.npz", **arrays)
        with np.load(tmp_path / "ood.npz", allow_pickle=False) as z:
            back = CombinedScore.from_arrays(dict(z), F)
        q = _cheap(Fq, W, b)
        s1, p1 = sc.score(q)
        s2, p2 = back.score(q)
        np.testing.assert_array_equal(s1, s2)
        np.testing.assert_array_equal(p1, p2)
        assert back.components == comps and back.combine == combine and back.seed == 3
        a2 = back.to_arrays()
        assert set(a2) == set(arrays)
        for k in arrays:
            np.testing.assert_array_equal(a2[k], arrays[k])
    with pytest.raises(InputError, match="refit"):
        CombinedScore.from_arrays({"config": np.array('{"format": 1}')})
    broken = dict(arrays)
    del broken["fdbd.centre"]
    with pytest.raises(InputError, match="centre"):
        CombinedScore.from_arrays(broken, F)


# ------------------------------------------------------------------ input checks
def test_fit_refuses_too_little_calibration_data_and_bad_arguments():
    centres, W, b = _centres(12)
    rng = np.random.default_rng(13)
    F, y = _draw(rng, centres, 200)
    Fc, _ = _draw(rng, centres, MIN_CALIB)
    small = _cheap(Fc, W, b).take(np.arange(MIN_CALIB - 1))
    with pytest.raises(InputError, match=f"at least {MIN_CALIB}"):
        CombinedScore().fit(F, y, W, b, small)
    sc = CombinedScore().fit(F, y, W, b, _cheap(Fc, W, b))  # exactly the minimum is fine
    assert sc.calib_scores_.size == MIN_CALIB // 2
    cal = _cheap(Fc, W, b)
    with pytest.raises(InputError, match="reads Evidence.features"):  # no features
        CombinedScore().fit(F, y, W, b, replace(cal, features=None, logits=Fc @ W.T + b))
    with pytest.raises(InputError, match="margins of shape"):
        CombinedScore().fit(F, y, W, b, replace(cal, margins=cal.margins[:, :2]))
    with pytest.raises(InputError, match="reads Evidence.hull"):
        CombinedScore(ALL).fit(F, y, W, b, replace(cal, hull=None))
    with pytest.raises(InputError, match="reads Evidence.sphere"):
        CombinedScore(ALL).fit(F, y, W, b, replace(cal, sphere=None))
    with pytest.raises(InputError, match="an Evidence"):
        CombinedScore().fit(F, y, W, b, {"features": Fc})
    with pytest.raises(InputError):
        CombinedScore().fit(F, y.astype(float), W, b, cal)
    with pytest.raises(InputError):
        CombinedScore().fit(F[:, :3], y, W, b, cal)
    for bad in (
        dict(components=("nope",)),
        dict(components=()),
        dict(combine="mean"),
        dict(components=("hull", "hull")),
        dict(components=(HullDistance(), "hull")),
        dict(fit_fraction=1.0),
        dict(components=("hull", "fdbd"), combine="stouffer", groups=[["hull"], ["fdbd"]]),
        dict(components=("hull", "fdbd"), combine="stouffer_or", groups=[["hull"]]),
        dict(components=("hull", "fdbd"), combine="stouffer_or", groups=[["hull", "fdbd"], []]),
        dict(components=("hull", "fdbd"), combine="stouffer_or", groups=[["hull", "hull", "fdbd"]]),
    ):
        with pytest.raises(InputError):
            CombinedScore(**bad)
    with pytest.raises(NotFittedError, match="call fit"):
        CombinedScore().score(cal)
    # only what the components read is required
    s, p = (
        CombinedScore(("mahalanobis",))
        .fit(F, y, W, b, Evidence(features=Fc))
        .score(Evidence(features=Fc[:3]))
    )
    assert s.shape == p.shape == (3,)
    s, _ = (
        CombinedScore(("hull",))
        .fit(F, y, W, b, Evidence(hull=cal.hull))
        .score(Evidence(hull=cal.hull[:4]))
    )
    assert s.shape == (4,)
    with pytest.raises(InputError, match="NaN or Inf"):
        sc.score(replace(cal, hull=np.full(len(Fc), np.nan)))


# ------------------------------------------------------------------ components, brute force
def test_every_component_against_a_direct_numpy_computation():
    centres, W, b = _centres(14, n=4, f=10)
    rng = np.random.default_rng(15)
    F, y = _draw(rng, centres, 500)
    F[:, 0] = 0.0  # a dead ReLU feature: singular covariance, pseudo-inverse
    Fc, _ = _draw(rng, centres, 120)
    Q, _ = _draw(rng, centres, 30)
    Q = np.vstack([Q, rng.gamma(1.0, 3.0, size=(10, F.shape[1]))])
    Q[:, 0] = 0.0
    m = compute_margins(Q, W, b, nonneg=True)  # the exact margins the guard gives
    M = m.margins.copy()
    M[0, np.flatnonzero(~np.isnan(M[0]))[0]] = np.inf  # unreachable
    q = Evidence(
        features=Q,
        logits=Q @ W.T + b,
        hull=rng.gamma(2.0, size=len(Q)),
        d_min=m.d_min,
        margins=M,
        sphere=rng.gamma(1.0, 0.1, size=len(Q)),
    )
    sc = CombinedScore(ALL, seed=4).fit(F, y, W, b, _cheap(Fc, W, b))
    got = sc.component_scores(q)
    n, f = W.shape

    np.testing.assert_array_equal(got["hull"], q.hull)
    np.testing.assert_array_equal(got["sphere_hull"], q.sphere)

    med = np.median(F, axis=0)
    Z = Q @ W.T + b
    ref = []
    for i, x in enumerate(Q):
        p = int(np.argmax(Z[i]))
        ms = []
        for j in range(n):
            if j == p:
                continue
            mj = q.margins[i, j]
            if np.isinf(mj):
                mj = abs(Z[i, p] - Z[i, j]) / np.linalg.norm(W[p] - W[j])
            ms.append(mj)
        ref.append(-np.mean(ms) / np.linalg.norm(x - med))
    np.testing.assert_allclose(got["fdbd"], ref, rtol=1e-10)

    classes = np.unique(y)
    mus = [F[y == c].mean(0) for c in classes]
    S = sum((F[y == c] - mus[i]).T @ (F[y == c] - mus[i]) for i, c in enumerate(classes)) / len(F)
    P = np.linalg.pinv(S, hermitian=True)
    ref = [min((x - mu) @ P @ (x - mu) for mu in mus) for x in Q]
    np.testing.assert_allclose(got["mahalanobis"], ref, rtol=1e-7)

    u = -np.linalg.pinv(W) @ b
    X = F - u
    vals, vecs = np.linalg.eigh(X.T @ X / len(X))
    NS = vecs[:, np.argsort(vals)[: f - f // 2]]  # all but the f // 2 largest
    alpha = (F @ W.T + b).max(1).mean() / np.linalg.norm(X @ NS, axis=1).mean()
    lse = np.log(np.exp(Z).sum(1))
    ref = alpha * np.linalg.norm((Q - u) @ NS, axis=1) - lse
    np.testing.assert_allclose(got["vim"], ref, rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(got["energy"], -lse, rtol=1e-12)

    knn = sc.detectors_[ALL.index("knn")]
    assert (knn.k, knn.subsample, knn.seed) == (5, 0.1, 4)
    pts = knn.points_
    Fn = F / np.linalg.norm(F, axis=1, keepdims=True)
    assert len(pts) == int(0.1 * len(F))  # at most a 10% subsample of the training features
    d_to_train = np.linalg.norm(pts[:, None] - Fn[None], axis=2).min(axis=1)
    assert d_to_train.max() < 1e-9  # ... of the normalised training features themselves
    Qn = Q / np.linalg.norm(Q, axis=1, keepdims=True)
    D = np.sqrt(((Qn[:, None, :] - pts[None]) ** 2).sum(-1))
    np.testing.assert_allclose(got["knn"], np.sort(D, axis=1)[:, 4], atol=1e-7)

    np.testing.assert_allclose(got["feature_norm"], -np.sqrt((Q**2).sum(1)), rtol=1e-12)


def test_normal_score_transform():
    """Midrank ECDF on a normal scale inside the calibration range, linear above, flat below."""
    centres, W, b = _centres(16)
    rng = np.random.default_rng(17)
    F, y = _draw(rng, centres, 200)
    Fc, _ = _draw(rng, centres, 300)
    cal = _cheap(Fc, W, b)
    sc = CombinedScore(("hull",)).fit(F, y, W, b, cal)
    t = sc.transforms_[0]
    assert np.all(np.diff(t.x) > 0) and np.all(np.diff(t.z) > 0)
    h = np.linspace(t.x[0] - 5, t.x[-1] + 5, 999)
    z = t(h)
    assert np.all(np.diff(z) >= 0)
    assert np.all(z[h < t.x[0]] == t.z[0])
    top = h > t.x[-1]
    np.testing.assert_allclose(z[top], t.z[-1] + t.slope * (h[top] - t.x[-1]))
    # the fit half's median maps near 0
    fit_half = cal.hull[np.random.default_rng(0).permutation(300)[: sc.n_fit_]]
    assert abs(t(np.array([np.median(fit_half)]))[0]) < 0.05


def test_components_by_name_are_the_detectors_with_the_combined_scores_choices(tmp_path):
    """Names and explicit detector instances give the same numbers, bit for bit; the instances
    given are not fitted in place, and persist with their own settings."""
    centres, W, b = _centres(18)
    rng = np.random.default_rng(19)
    F, y = _draw(rng, centres, 300)
    Fc, _ = _draw(rng, centres, 200)
    Fq, _ = _draw(rng, centres, 40)
    assert DEFAULT_COMPONENTS == (
        "hw_sphere_hull",
        "hw_metric_sphere_hull",
        "fdbd",
        "low_tail",
        "hull",
    )
    assert DEFAULT_COMBINE == "stouffer_max"
    given = [
        WhitenedSphereHull(),
        WhitenedMetricSphereHull(),
        FDBD(margins="exact", centre="median"),
        LowTail(),
        HullDistance(),
    ]
    a = CombinedScore().fit(F, y, W, b, _cheap(Fc, W, b))
    b_ = CombinedScore(given).fit(F, y, W, b, _cheap(Fc, W, b))
    for x, z in zip(a.score(_cheap(Fq, W, b)), b_.score(_cheap(Fq, W, b))):
        np.testing.assert_array_equal(x, z)
    assert not hasattr(given[1], "W_")
    # the components that index the training features load only with them
    np.savez(tmp_path / "d.npz", **a.to_arrays())
    with np.load(tmp_path / "d.npz", allow_pickle=False) as z:
        with pytest.raises(InputError, match="training features"):
            CombinedScore.from_arrays(dict(z))
        back = CombinedScore.from_arrays(dict(z), F)
    for x, z in zip(a.score(_cheap(Fq, W, b)), back.score(_cheap(Fq, W, b))):
        np.testing.assert_array_equal(x, z)
    own = CombinedScore(["hull", KNN(k=3, subsample=0.5, seed=7)]).fit(F, y, W, b, _cheap(Fc, W, b))
    np.savez(tmp_path / "c.npz", **own.to_arrays())
    with np.load(tmp_path / "c.npz", allow_pickle=False) as z:
        back = CombinedScore.from_arrays(dict(z))
    assert back.components[0] == "hull" and back.components[1].k == 3
    np.testing.assert_array_equal(back.score(_cheap(Fq, W, b))[0], own.score(_cheap(Fq, W, b))[0])


# ------------------------------------------------------------------ stouffer_or
def _grouped_case(seed: int):
    """Training features and labels, W, b, calibration features and query Evidence (a few
    queries far out) for the tests of the grouped rules."""
    centres, W, b = _centres(seed, n=4, f=10)
    rng = np.random.default_rng(seed + 1)
    F, y = _draw(rng, centres, 400)
    Fc, _ = _draw(rng, centres, 200)
    Fq, _ = _draw(rng, centres, 50)
    Fq[:5] *= 4.0
    return F, y, W, b, Fc, _cheap(Fq, W, b)


def test_stouffer_or_is_the_soft_maximum_of_the_groups_stouffer_statistics(tmp_path):
    """Against a direct computation from the fitted normal transforms: the default groups (fDBD
    alone, the rest together), explicit groups, their persistence, and format-2 arrays (written
    before the groups existed) still read."""
    F, y, W, b, Fc, q = _grouped_case(20)
    comps = ("sphere_hull", "fdbd", "hull", "vim")
    sc = CombinedScore(comps, "stouffer_or", seed=2).fit(F, y, W, b, _cheap(Fc, W, b))
    assert sc.groups_ == ((0, 2, 3), (1,))
    T = np.stack([t(r) for t, r in zip(sc.transforms_, sc.component_scores(q).values())], 1)
    z_rest = (T[:, 0] + T[:, 2] + T[:, 3]) / np.sqrt(3.0)
    want = np.log(np.exp(z_rest) + np.exp(T[:, 1]))
    s, p = sc.score(q)
    np.testing.assert_allclose(s, want, rtol=1e-12, atol=1e-12)
    ref = np.sort(sc._combine(sc._normal(sc._raw(_cheap(Fc, W, b)))))
    assert sc.calib_scores_.size == 100 and np.all(np.isin(sc.calib_scores_, ref))
    # explicit groups, and their round trip
    groups = (("hull", "fdbd"), ("sphere_hull",), ("vim",))
    g = CombinedScore(comps, "stouffer_or", seed=2, groups=groups).fit(F, y, W, b, _cheap(Fc, W, b))
    assert g.groups_ == ((2, 1), (0,), (3,))
    want = np.log(np.exp((T[:, 2] + T[:, 1]) / np.sqrt(2.0)) + np.exp(T[:, 0]) + np.exp(T[:, 3]))
    np.testing.assert_allclose(g.score(q)[0], want, rtol=1e-12, atol=1e-12)
    np.savez(tmp_path / "g.npz", **g.to_arrays())
    with np.load(tmp_path / "g.npz", allow_pickle=False) as z:
        back = CombinedScore.from_arrays(dict(z))
    assert back.groups == groups and back.groups_ == g.groups_
    np.testing.assert_array_equal(back.score(q)[0], g.score(q)[0])
    # without fDBD the default grouping is one group: its Stouffer statistic, nothing else
    one = CombinedScore(("hull", "vim"), "stouffer_or").fit(F, y, W, b, _cheap(Fc, W, b))
    assert one.groups_ == ((0, 1),)
    # format 2 (before the groups): still read, and the same score
    old = CombinedScore(("hull", "fdbd"), "stouffer").fit(F, y, W, b, _cheap(Fc, W, b))
    arrays = old.to_arrays()
    cfg = json.loads(str(arrays["config"]))
    del cfg["groups"]
    cfg["format"] = 2
    arrays["config"] = np.array(json.dumps(cfg))
    np.testing.assert_array_equal(CombinedScore.from_arrays(arrays).score(q)[0], old.score(q)[0])


# ------------------------------------------------------------------ stouffer_max
def test_stouffer_max_is_the_first_group_or_a_specialist_above_it(tmp_path):
    """Against a direct computation from the fitted normal transforms: by default the
    specialists (fDBD, the low-activation tail, the raw hull) stand alone ``offset`` below the
    Stouffer statistic of the rest; explicit groups and offset; their round trip."""
    F, y, W, b, Fc, q = _grouped_case(23)
    comps = ("sphere_hull", "fdbd", "vim", "hull")
    sc = CombinedScore(comps, "stouffer_max", seed=2).fit(F, y, W, b, _cheap(Fc, W, b))
    assert sc.groups_ == ((0, 2), (1,), (3,)) and sc.offset == 0.25
    T = np.stack([t(r) for t, r in zip(sc.transforms_, sc.component_scores(q).values())], 1)
    want = np.maximum((T[:, 0] + T[:, 2]) / np.sqrt(2.0), np.maximum(T[:, 1], T[:, 3]) - 0.25)
    np.testing.assert_allclose(sc.score(q)[0], want, rtol=1e-12, atol=1e-12)
    groups = (("vim",), ("sphere_hull", "fdbd", "hull"))
    g = CombinedScore(comps, "stouffer_max", seed=2, groups=groups, offset=1.5)
    g.fit(F, y, W, b, _cheap(Fc, W, b))
    want = np.maximum(T[:, 2], (T[:, 0] + T[:, 1] + T[:, 3]) / np.sqrt(3.0) - 1.5)
    np.testing.assert_allclose(g.score(q)[0], want, rtol=1e-12, atol=1e-12)
    np.savez(tmp_path / "g.npz", **g.to_arrays())
    with np.load(tmp_path / "g.npz", allow_pickle=False) as z:
        back = CombinedScore.from_arrays(dict(z))
    assert back.offset == 1.5 and back.groups_ == g.groups_
    np.testing.assert_array_equal(back.score(q)[0], g.score(q)[0])
    # one group only: its Stouffer statistic
    one = CombinedScore(("sphere_hull", "vim"), "stouffer_max").fit(F, y, W, b, _cheap(Fc, W, b))
    assert one.groups_ == ((0, 1),)
    for bad in (-0.1, float("nan")):
        with pytest.raises(InputError, match="offset"):
            CombinedScore(comps, "stouffer_max", offset=bad)
