"""OOD peers (guard.peers) against independent brute-force numpy computations, and their sign
conventions; the evaluation sets (guard.evaluation.sets): shapes, dtypes, ranges, determinism."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from guard import peers
from guard.errors import InputError, NotFittedError


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


def test_registry_names_and_make():
    assert set(peers.REGISTRY) == {"msp", "energy", "mahalanobis", "knn", "vim", "fdbd",
                                   "ambiguity", "hull"}
    for name, cls in peers.REGISTRY.items():
        assert cls.name == name
    assert isinstance(peers.make("knn", k=3), peers.KNN)
    with pytest.raises(InputError):
        peers.make("nope")
    with pytest.raises(NotFittedError):
        peers.MSP().score(np.zeros((2, 3)))


def test_msp_and_energy_brute_force():
    F, y, W, b, Q = _problem()
    Z = _logits(Q, W, b)
    msp = peers.MSP().fit(F, y, W, b)
    en = peers.Energy().fit(F, y, W, b)
    ref_msp = np.array([-max(np.exp(z) / np.exp(z).sum()) for z in Z])
    ref_en = np.array([-np.log(np.sum(np.exp(z))) for z in Z])
    np.testing.assert_allclose(msp.score(Q), ref_msp, rtol=1e-12)
    np.testing.assert_allclose(en.score(Q), ref_en, rtol=1e-12)
    # explicit logits are used as given
    np.testing.assert_allclose(en.score(Q, Z + 1.0), ref_en - 1.0, rtol=1e-12)
    with pytest.raises(InputError):
        en.score(Q, Z[:, :2])
    # huge logits stay finite
    big = peers.Energy().fit(F, y, W * 1e3, b).score(Q)
    assert np.all(np.isfinite(big))


def test_mahalanobis_brute_force_explicit_inverse():
    F, y, W, b, Q = _problem(1)
    det = peers.Mahalanobis(ridge=0.0).fit(F, y, W, b)
    classes = np.unique(y)
    mus = [F[y == c].mean(0) for c in classes]
    S = sum((F[y == c] - mus[i]).T @ (F[y == c] - mus[i]) for i, c in enumerate(classes)) / len(F)
    P = np.linalg.inv(S)
    ref = np.array([min((q - m) @ P @ (q - m) for m in mus) for q in Q])
    np.testing.assert_allclose(det.score(Q), ref, rtol=1e-9)
    # a dead (always zero) feature: the pseudo-inverse + ridge keeps everything finite
    F0, Q0 = F.copy(), Q.copy()
    F0[:, 0] = 0.0
    s = peers.Mahalanobis().fit(F0, y, W, b).score(Q0)
    assert np.all(np.isfinite(s))
    # without labels the predictions are used
    pred = _logits(F, W, b).argmax(1)
    np.testing.assert_allclose(peers.Mahalanobis(ridge=0).fit(F, None, W, b).score(Q),
                               peers.Mahalanobis(ridge=0).fit(F, pred, W, b).score(Q))


def test_knn_brute_force_full_distance_matrix():
    F, y, W, b, Q = _problem(2)
    for k in (1, 5, 50):
        det = peers.KNN(k=k).fit(F, y, W, b)
        Fn = F / np.linalg.norm(F, axis=1, keepdims=True)
        Qn = Q / np.linalg.norm(Q, axis=1, keepdims=True)
        D = np.sqrt(((Qn[:, None, :] - Fn[None, :, :]) ** 2).sum(-1))
        ref = np.sort(D, axis=1)[:, k - 1]
        np.testing.assert_allclose(det.score(Q), ref, rtol=1e-4, atol=1e-4)
    # k larger than the training set is capped; a zero vector is at distance 1 from everything
    det = peers.KNN(k=50).fit(F[:10], y[:10], W, b)
    assert det.score(np.zeros((1, F.shape[1])))[0] == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(InputError):
        peers.KNN(k=0)


def test_vim_brute_force():
    F, y, W, b, Q = _problem(3, f=10, c=3)
    d = 4
    det = peers.ViM(principal_dim=d).fit(F, y, W, b)
    u = -np.linalg.pinv(W) @ b
    X = F - u
    vals, vecs = np.linalg.eig(X.T @ X / len(X))
    order = np.argsort(-vals.real)
    NS = vecs[:, order[d:]].real  # residual space: all but the d largest
    r_train = np.linalg.norm(X @ NS, axis=1)
    alpha = _logits(F, W, b).max(1).mean() / r_train.mean()
    Z = _logits(Q, W, b)
    ref = alpha * np.linalg.norm((Q - u) @ NS, axis=1) - np.log(np.exp(Z).sum(1))
    np.testing.assert_allclose(det.score(Q), ref, rtol=1e-8, atol=1e-8)
    assert det.alpha_ == pytest.approx(alpha)
    assert peers.ViM().fit(F, y, W, b).principal_dim_ == F.shape[1] // 2
    with pytest.raises(InputError):
        peers.ViM(principal_dim=F.shape[1]).fit(F, y, W, b)


def test_fdbd_brute_force_loops():
    F, y, W, b, Q = _problem(4)
    det = peers.FDBD().fit(F, y, W, b)
    mu = F.mean(0)
    ref = []
    for q in Q:
        z = W @ q + b
        i = int(np.argmax(z))
        ds = [abs((W[i] - W[j]) @ q + b[i] - b[j]) / np.linalg.norm(W[i] - W[j])
              for j in range(len(b)) if j != i]
        ref.append(-np.mean(ds) / np.linalg.norm(q - mu))
    np.testing.assert_allclose(det.score(Q), ref, rtol=1e-10)


@pytest.mark.parametrize("name", ["msp", "energy", "mahalanobis", "knn", "vim", "fdbd"])
def test_point_far_from_the_data_scores_higher_than_training_points(name):
    # three well-separated classes and a classifier that fits them (logits from the class means)
    F, y, _, _, _ = _problem(5, n=400, f=8, c=3)
    mus = np.stack([F[y == c].mean(0) for c in range(3)])
    W, b = mus, -0.5 * (mus ** 2).sum(1)
    det = peers.make(name).fit(F, y, W, b)
    # far away along the null space of W, from the point where all logits are 0: no class is
    # preferred, the feature is orthogonal to every class mean, far from the training data
    u = -np.linalg.pinv(W) @ b
    null = np.linalg.svd(W)[2][3:]  # (f - 3, f) orthonormal basis of null(W)
    coef = np.random.default_rng(9).normal(size=(20, null.shape[0]))
    far = u + 100 * (coef @ null) / np.linalg.norm(coef, axis=1, keepdims=True)
    np.testing.assert_allclose(far @ W.T + b, 0, atol=1e-8)
    s_train, s_far = det.score(F), det.score(far)
    assert s_far.min() > np.quantile(s_train, 0.99), (name, s_far.min(), s_train.max())


def test_guard_based_scores_from_scores_arrays_and_features():
    from guard import Guard

    F, y, W, b, Q = _problem(6, n=120, f=6, c=3, relu=True)
    F, Q = F.astype(np.float32), Q.astype(np.float32)
    g = Guard(calib_fraction=0).fit_features(F, W, b, y)
    s = g.score_features(Q)
    amb = peers.Ambiguity(guard=g).fit(F, y, W, b)
    hull = peers.HullDistance().fit_guard(g)
    np.testing.assert_allclose(amb.score(s), -(s.d_min - s.hull_upper))
    np.testing.assert_allclose(amb.score(scores=(s.d_min, s.hull_upper)), s.hull_upper - s.d_min)
    np.testing.assert_allclose(amb.score(scores={"d_min": s.d_min, "hull": s.hull_upper}),
                               s.hull_upper - s.d_min)
    np.testing.assert_allclose(amb.score(Q), s.hull_upper - s.d_min, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(hull.score(s), s.hull_upper)
    # fitting its own guard on the features gives the same geometry
    own = peers.Ambiguity().fit(F, y, W, b)
    np.testing.assert_allclose(own.score(Q), s.hull_upper - s.d_min, rtol=1e-6, atol=1e-9)
    # training points are inside the hull: hull distance ~ 0
    assert np.all(hull.score(F[:10]) < 1e-3)
    assert np.all(hull.score(Q * 10 + 50) > 1.0)
    with pytest.raises(InputError):
        amb.score(scores=(s.d_min, s.hull_upper[:-1]))
    assert amb.needs_guard and not peers.MSP.needs_guard


def test_fit_input_validation():
    F, y, W, b, _ = _problem(7)
    with pytest.raises(InputError):
        peers.MSP().fit(F, y, W[:, :-1], b)
    with pytest.raises(InputError):
        peers.MSP().fit(F, y[:-1], W, b)
    with pytest.raises(InputError):
        peers.MSP().fit(F, y.astype(float), W, b)
    det = peers.MSP().fit(F, y, W, b)
    with pytest.raises(InputError):
        det.score(F[:, :-1])
    bad = F[:2].copy()
    bad[0, 0] = np.nan
    with pytest.raises(InputError):
        det.score(bad)


# ------------------------------------------------------------------------- evaluation sets
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
    for name, load in evalsets.FAR_OOD.items():
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
