"""Every detector of guard.detectors against an independent brute-force numpy computation, their
sign conventions, the Evidence they read, input checks and exact persistence."""

from __future__ import annotations

import numpy as np
import pytest

from guard import detectors as det
from guard.detectors import Evidence
from guard.errors import InputError, NotFittedError
from guard.geometry.margins import compute_margins

ALL = (
    det.MSP(),
    det.Energy(),
    det.Mahalanobis(),
    det.KNN(k=7),
    det.KNN(k=3, subsample=0.2),
    det.ViM(),
    det.FDBD(),
    det.FDBD(margins="exact", centre="median"),
    det.FeatureNorm(),
    det.HullDistance(),
    det.Ambiguity(),
)


def _problem(seed=0, n=300, f=12, c=4, relu=False):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 3, size=(c, f))
    y = rng.integers(0, c, size=n)
    F = centres[y] + rng.normal(size=(n, f)) * rng.uniform(0.5, 2.0, size=f)
    if relu:
        F = np.maximum(F, 0)
    W = rng.normal(size=(c, f))
    b = rng.normal(size=c)
    Q = rng.normal(0, 3, size=(40, f))
    if relu:
        Q = np.maximum(Q, 0)
    return F, y.astype(np.int64), W, b, Q


def _logits(F, W, b):
    return F @ W.T + b


def _evidence(Q, W, b, seed=0):
    """Every Evidence field: exact margins (nonneg), a stand-in hull distance."""
    m = compute_margins(Q, W, b, nonneg=True)
    hull = np.random.default_rng(seed).gamma(2.0, size=len(Q))
    return Evidence(
        features=Q, logits=_logits(Q, W, b), margins=m.margins, hull=hull, d_min=m.d_min
    )


def test_registry_names_and_make():
    assert set(det.REGISTRY) == {
        "msp",
        "energy",
        "mahalanobis",
        "knn",
        "vim",
        "fdbd",
        "ambiguity",
        "hull",
        "sphere_hull",
        "hw_sphere_hull",
        "hw_metric_sphere_hull",
        "low_tail",
    }
    for name, factory in det.REGISTRY.items():
        assert factory().name == name
    assert isinstance(det.make("knn", k=3), det.KNN) and det.make("knn", k=3).k == 3
    # the peers are the published methods: hyperplane fDBD around the mean, exact kNN, k = 50
    fdbd, knn = det.make("fdbd"), det.make("knn")
    assert (fdbd.margins, fdbd.centre, knn.k, knn.subsample) == ("hyperplane", "mean", 50, None)
    with pytest.raises(InputError, match="unknown detector"):
        det.make("nope")
    with pytest.raises(NotFittedError, match="call fit"):
        det.MSP().score(np.zeros((2, 3)))


def test_msp_and_energy_brute_force():
    F, y, W, b, Q = _problem()
    Z = _logits(Q, W, b)
    msp = det.MSP().fit(F, y, W, b)
    en = det.Energy().fit(F, y, W, b)
    ref_msp = np.array([-max(np.exp(z) / np.exp(z).sum()) for z in Z])
    ref_en = np.array([-np.log(np.sum(np.exp(z))) for z in Z])
    np.testing.assert_allclose(msp.score(Q), ref_msp, rtol=1e-12)
    np.testing.assert_allclose(en.score(Q), ref_en, rtol=1e-12)
    # explicit logits are used as given, beside features or in the Evidence
    np.testing.assert_allclose(en.score(Q, Z + 1.0), ref_en - 1.0, rtol=1e-12)
    np.testing.assert_allclose(en.score(Evidence(logits=Z + 1.0)), ref_en - 1.0, rtol=1e-12)
    with pytest.raises(InputError, match=r"logits of shape \(N, 4\)"):
        en.score(Q, Z[:, :2])
    with pytest.raises(InputError, match="inside the Evidence"):
        en.score(Evidence(features=Q), Z)
    # huge logits stay finite
    assert np.all(np.isfinite(det.Energy().fit(F, y, W * 1e3, b).score(Q)))


def test_mahalanobis_brute_force_explicit_inverse():
    F, y, W, b, Q = _problem(1)
    d = det.Mahalanobis().fit(F, y, W, b)
    classes = np.unique(y)
    mus = [F[y == c].mean(0) for c in classes]
    S = sum((F[y == c] - mus[i]).T @ (F[y == c] - mus[i]) for i, c in enumerate(classes)) / len(F)
    P = np.linalg.inv(S)
    ref = np.array([min((q - m) @ P @ (q - m) for m in mus) for q in Q])
    np.testing.assert_allclose(d.score(Q), ref, rtol=1e-9)
    # a dead (always zero) feature: the pseudo-inverse, restricted to the live features
    F0, Q0 = F.copy(), Q.copy()
    F0[:, 0] = Q0[:, 0] = 0.0
    mus0 = [F0[y == c].mean(0) for c in classes]
    S0 = sum(
        (F0[y == c] - mus0[i]).T @ (F0[y == c] - mus0[i]) for i, c in enumerate(classes)
    ) / len(F)
    P0 = np.zeros_like(S0)
    P0[1:, 1:] = np.linalg.inv(S0[1:, 1:])
    ref0 = np.array([min((q - m) @ P0 @ (q - m) for m in mus0) for q in Q0])
    np.testing.assert_allclose(det.Mahalanobis().fit(F0, y, W, b).score(Q0), ref0, rtol=1e-8)
    # without labels the predictions are used
    pred = _logits(F, W, b).argmax(1)
    np.testing.assert_array_equal(
        det.Mahalanobis().fit(F, None, W, b).score(Q), det.Mahalanobis().fit(F, pred, W, b).score(Q)
    )


def test_knn_brute_force_full_distance_matrix():
    F, y, W, b, Q = _problem(2)
    Fn = F / np.linalg.norm(F, axis=1, keepdims=True)
    Qn = Q / np.linalg.norm(Q, axis=1, keepdims=True)
    D = np.sqrt(((Qn[:, None, :] - Fn[None, :, :]) ** 2).sum(-1))
    for k in (1, 5, 50):
        got = det.KNN(k=k).fit(F, y, W, b).score(Q)
        np.testing.assert_allclose(got, np.sort(D, axis=1)[:, k - 1], rtol=1e-9, atol=1e-12)
    # k larger than the training set is capped; a zero vector is at distance 1 from everything
    small = det.KNN(k=50).fit(F[:10], y[:10], W, b)
    assert small.k_ == 10
    assert small.score(np.zeros((1, F.shape[1])))[0] == pytest.approx(1.0, abs=1e-9)
    with pytest.raises(InputError):
        det.KNN(k=0)
    with pytest.raises(InputError):
        det.KNN(subsample=1.5)


def test_knn_subsample_is_a_seeded_subset_of_the_normalised_training_features():
    F, y, W, b, Q = _problem(3, n=500)
    d = det.KNN(k=5, subsample=0.1, seed=4).fit(F, y, W, b)
    pts = d.points_
    assert len(pts) == 50
    Fn = F / np.linalg.norm(F, axis=1, keepdims=True)
    assert np.linalg.norm(pts[:, None] - Fn[None], axis=2).min(axis=1).max() < 1e-9
    Qn = Q / np.linalg.norm(Q, axis=1, keepdims=True)
    D = np.sqrt(((Qn[:, None, :] - pts[None]) ** 2).sum(-1))
    np.testing.assert_allclose(d.score(Q), np.sort(D, axis=1)[:, 4], rtol=1e-9)
    np.testing.assert_array_equal(det.KNN(k=5, subsample=0.1, seed=4).fit(F, y, W, b).points_, pts)
    assert not np.array_equal(det.KNN(k=5, subsample=0.1, seed=5).fit(F, y, W, b).points_, pts)


def test_vim_brute_force():
    F, y, W, b, Q = _problem(3, f=10, c=3)
    d = 4
    vim = det.ViM(principal_dim=d).fit(F, y, W, b)
    u = -np.linalg.pinv(W) @ b
    X = F - u
    vals, vecs = np.linalg.eig(X.T @ X / len(X))
    order = np.argsort(-vals.real)
    NS = vecs[:, order[d:]].real  # residual space: all but the d largest
    r_train = np.linalg.norm(X @ NS, axis=1)
    alpha = _logits(F, W, b).max(1).mean() / r_train.mean()
    Z = _logits(Q, W, b)
    ref = alpha * np.linalg.norm((Q - u) @ NS, axis=1) - np.log(np.exp(Z).sum(1))
    np.testing.assert_allclose(vim.score(Q), ref, rtol=1e-8, atol=1e-8)
    assert vim.alpha_ == pytest.approx(alpha)
    assert det.ViM().fit(F, y, W, b).principal_dim_ == F.shape[1] // 2
    with pytest.raises(InputError, match="principal_dim"):
        det.ViM(principal_dim=F.shape[1]).fit(F, y, W, b)


def test_fdbd_hyperplane_brute_force_loops():
    F, y, W, b, Q = _problem(4)
    mu = F.mean(0)
    ref = []
    for q in Q:
        z = W @ q + b
        i = int(np.argmax(z))
        ds = [
            abs((W[i] - W[j]) @ q + b[i] - b[j]) / np.linalg.norm(W[i] - W[j])
            for j in range(len(b))
            if j != i
        ]
        ref.append(-np.mean(ds) / np.linalg.norm(q - mu))
    np.testing.assert_allclose(det.FDBD().fit(F, y, W, b).score(Q), ref, rtol=1e-10)


def test_fdbd_exact_margins_median_centre_brute_force_loops():
    F, y, W, b, Q = _problem(5, relu=True)
    ev = _evidence(Q, W, b)
    M = ev.margins.copy()
    M[0, np.flatnonzero(~np.isnan(M[0]))[0]] = np.inf  # an unreachable boundary
    ev = Evidence(features=Q, margins=M)
    d = det.FDBD(margins="exact", centre="median").fit(F, y, W, b)
    assert d.needs == ("features", "margins")
    med = np.median(F, axis=0)
    Z = _logits(Q, W, b)
    ref = []
    for i, x in enumerate(Q):
        p = int(np.flatnonzero(np.isnan(M[i]))[0])
        ms = [
            abs(Z[i, p] - Z[i, j]) / np.linalg.norm(W[p] - W[j]) if np.isinf(M[i, j]) else M[i, j]
            for j in range(len(b))
            if j != p
        ]
        ref.append(-np.mean(ms) / np.linalg.norm(x - med))
    np.testing.assert_allclose(d.score(ev), ref, rtol=1e-10)
    # exact margins are at least the hyperplane distances: the score is at most the paper's
    hyper = det.FDBD(centre="median").fit(F, y, W, b).score(Q)
    assert np.all(d.score(ev) <= hyper + 1e-12)
    with pytest.raises(InputError, match="reads Evidence.margins"):
        d.score(Q)
    bad = M.copy()
    bad[1, np.flatnonzero(~np.isnan(bad[1]))[0]] = -1.0
    with pytest.raises(InputError, match=">= 0"):
        d.score(Evidence(features=Q, margins=bad))
    with pytest.raises(InputError):
        det.FDBD(margins="closed")


@pytest.mark.parametrize("name", ["msp", "energy", "mahalanobis", "knn", "vim", "fdbd"])
def test_point_far_from_the_data_scores_higher_than_training_points(name):
    # three well-separated classes and a classifier that fits them (logits from the class means)
    F, y, _, _, _ = _problem(5, n=400, f=8, c=3)
    mus = np.stack([F[y == c].mean(0) for c in range(3)])
    W, b = mus, -0.5 * (mus**2).sum(1)
    d = det.make(name).fit(F, y, W, b)
    # far away along the null space of W, from the point where all logits are 0: no class is
    # preferred, the feature is orthogonal to every class mean, far from the training data
    u = -np.linalg.pinv(W) @ b
    null = np.linalg.svd(W)[2][3:]  # (f - 3, f) orthonormal basis of null(W)
    coef = np.random.default_rng(9).normal(size=(20, null.shape[0]))
    far = u + 100 * (coef @ null) / np.linalg.norm(coef, axis=1, keepdims=True)
    np.testing.assert_allclose(far @ W.T + b, 0, atol=1e-8)
    s_train, s_far = d.score(F), d.score(far)
    assert s_far.min() > np.quantile(s_train, 0.99), (name, s_far.min(), s_train.max())


def test_geometric_scores_read_the_guards_geometry_from_evidence():
    from guard import Guard

    F, y, W, b, Q = _problem(6, n=120, f=6, c=3, relu=True)
    F, Q = F.astype(np.float32), Q.astype(np.float32)
    g = Guard(calib_fraction=0).fit_features(F, W, b, y)
    s = g.score_features(Q)
    amb = det.Ambiguity().fit(F, y, W, b)
    hull = det.HullDistance().fit(F, y, W, b)
    np.testing.assert_array_equal(amb.score(Evidence.from_scores(s, Q)), s.hull_upper - s.d_min)
    np.testing.assert_array_equal(
        amb.score(Evidence(hull=s.hull_upper, d_min=s.d_min)), -s.ambiguity
    )
    np.testing.assert_array_equal(hull.score(Evidence.from_scores(s)), s.hull_upper)
    # training points are inside the hull, far points outside
    assert np.all(hull.score(Evidence.from_scores(g.score_features(F[:10]))) < 1e-3)
    assert np.all(hull.score(Evidence.from_scores(g.score_features(Q * 10 + 50))) > 1.0)
    with pytest.raises(InputError, match="Evidence.from_scores"):
        hull.score(Q)  # features alone: the geometry must come from the guard
    with pytest.raises(InputError, match="differ in their number of rows"):
        Evidence(hull=s.hull_upper, d_min=s.d_min[:-1])
    assert set(amb.needs) == {"hull", "d_min"} and det.MSP.needs == ("logits",)


def test_evidence_checks_and_rows():
    Q = np.zeros((5, 3))
    with pytest.raises(InputError, match=r"Evidence.hull of shape \(N,\)"):
        Evidence(hull=np.zeros((5, 1)))
    with pytest.raises(InputError, match="features"):
        Evidence(features=np.zeros(5))
    ev = Evidence(features=Q, hull=np.arange(5.0))
    assert len(ev) == 5 and len(Evidence()) == 0
    sub = ev.take(np.array([4, 1]))
    np.testing.assert_array_equal(sub.hull, [4.0, 1.0])
    assert sub.features.shape == (2, 3) and sub.margins is None
    # the hull distances the guard computed for named detectors: one (N,) array per name
    ev = Evidence(hull=np.arange(5.0), hulls={"a": np.arange(5.0) * 2})
    assert len(Evidence(hulls={"a": np.zeros(3)})) == 3
    np.testing.assert_array_equal(ev.take(np.array([3])).hulls["a"], [6.0])
    with pytest.raises(InputError, match=r"hulls\['a'\] of shape \(N,\)"):
        Evidence(hulls={"a": np.zeros((5, 1))})
    with pytest.raises(InputError, match="differ in their number of rows"):
        Evidence(hull=np.zeros(5), hulls={"a": np.zeros(4)})
    with pytest.raises(InputError, match="a mapping"):
        Evidence(hulls=[np.zeros(5)])  # type: ignore[arg-type]


def test_fit_and_score_input_validation():
    F, y, W, b, _ = _problem(7)
    with pytest.raises(InputError):
        det.MSP().fit(F, y, W[:, :-1], b)
    with pytest.raises(InputError):
        det.MSP().fit(F, y[:-1], W, b)
    with pytest.raises(InputError, match="integer labels"):
        det.MSP().fit(F, y.astype(float), W, b)
    d = det.MSP().fit(F, y, W, b)
    with pytest.raises(InputError, match=r"features of shape \(N, 12\)"):
        d.score(F[:, :-1])
    bad = F[:2].copy()
    bad[0, 0] = np.nan
    with pytest.raises(InputError, match="NaN"):
        det.Mahalanobis().fit(F, y, W, b).score(bad)
    with pytest.raises(InputError, match="Evidence"):
        d.score({"features": F})


@pytest.mark.parametrize("d", ALL, ids=lambda d: repr(d))
def test_to_arrays_from_arrays_exact_round_trip(tmp_path, d):
    F, y, W, b, Q = _problem(8, relu=True)
    ev = _evidence(Q, W, b)
    d.fit(F.astype(np.float32), y, W, b)
    arrays = d.to_arrays()
    assert all(isinstance(v, np.ndarray) and v.dtype != object for v in arrays.values())
    np.savez(tmp_path / "d.npz", **arrays)
    with np.load(tmp_path / "d.npz", allow_pickle=False) as z:
        back = type(d).from_arrays(dict(z))
    assert repr(back) == repr(d)
    np.testing.assert_array_equal(back.score(ev), d.score(ev))
    for k, v in back.to_arrays().items():
        np.testing.assert_array_equal(v, arrays[k])
    with pytest.raises(InputError, match="not the arrays"):
        type(d).from_arrays({k: v for k, v in arrays.items() if k != "W"})


# ---------------------------------------------------------------- guard.detectors.whitened
@pytest.mark.parametrize("cls", [det.WhitenedSphereHull, det.WhitenedMetricSphereHull])
def test_whitened_sphere_hull_is_the_certified_distance_in_its_space(cls):
    """The transform against its definition (A^4 = S_w^-1 for the pooled within-class
    covariance, times (I + W_n^T W_n)^(1/2) with the metric), and the score against an exact
    QP (Clarabel) of the transformed query's distance to the hull of the transformed training
    features: within the query's relative gap (1e-2 by default, 1e-3 asked), never below the
    true distance."""
    from tests.reference import solvers as reference

    F, y, W, b, Q = _problem(21, n=120, f=6, relu=True)
    d = cls().fit(F, y, W, b)
    A = d.transform_
    mu = np.stack([F[y == c].mean(0) for c in range(4)])
    D = F - mu[y]
    Sw = D.T @ D / len(F)
    M = np.eye(6)
    if d.metric:
        Wn = W / np.linalg.norm(W, 2)
        M = M + Wn.T @ Wn
    # A = S^-1/4 R with R R^T = M, so (A M^-1 A^T)^2 = S^-1
    P = A @ np.linalg.inv(M) @ A.T
    np.testing.assert_allclose(P @ P, np.linalg.inv(Sw), rtol=1e-8, atol=1e-10)
    T = det.to_sphere(F @ A)
    U = det.to_sphere(Q[:12] @ A)
    tight = cls(tol=1e-3).fit(F, y, W, b)
    for dd, tol in ((d, 1e-2), (tight, 1e-3)):
        s = dd.score(Q[:12])
        for k in range(12):
            true = reference.hull_distance(T, U[k])
            assert true - 1e-7 <= s[k] <= true * (1 + 1.5 * tol) + 1e-6, (k, s[k], true)


def test_low_tail_against_brute_force():
    """Per unit -log((#{t_j <= x_j} + 1) / (N + 2)) by direct counting; the k largest summed."""
    F, y, W, b, Q = _problem(22, n=200, f=9, relu=True)
    Q[:5, :3] = -1.0  # below every training value: the largest surprisal
    for k in (1, 3):
        d = det.LowTail(k=k).fit(F.astype(np.float32), y, W, b)
        assert d._sorted.flags.c_contiguous  # one unit's values in one run of memory
        s = d.score(Q)
        Ff, Qf = F.astype(np.float32), Q.astype(np.float32)
        for r in range(len(Q)):
            counts = (Ff <= Qf[r]).sum(axis=0)
            L = -np.log((counts + 1.0) / (len(F) + 2.0))
            assert s[r] == pytest.approx(np.sort(L)[::-1][:k].sum(), rel=1e-12)
        assert s[:5].min() >= k * np.log(len(F) + 2.0) - 1e-9
    with pytest.raises(InputError, match="k <="):
        det.LowTail(k=10).fit(F, y, W, b)
    with pytest.raises(InputError, match="k >= 1"):
        det.LowTail(k=0)


@pytest.mark.parametrize(
    "d", [det.WhitenedSphereHull(), det.WhitenedMetricSphereHull(), det.LowTail()], ids=repr
)
def test_training_feature_detectors_round_trip_with_bind(tmp_path, d):
    """They store only their transform: loaded, they score once bound to the training
    features, bit for bit as fitted; unbound they say what is missing."""
    F, y, W, b, Q = _problem(23, n=150, f=8, relu=True)
    F = F.astype(np.float32)
    d.fit(F, y, W, b)
    arrays = d.to_arrays()
    assert max(v.size for v in arrays.values()) <= 8 * 8  # no copy of the training features
    np.savez(tmp_path / "d.npz", **arrays)
    with np.load(tmp_path / "d.npz", allow_pickle=False) as z:
        back = type(d).from_arrays(dict(z))
    with pytest.raises(InputError, match="bind"):
        back.score(Q)
    back.bind(F)
    np.testing.assert_array_equal(back.score(Q), d.score(Q))
    with pytest.raises(InputError, match="training features"):
        back.bind(F[:, :-1])
