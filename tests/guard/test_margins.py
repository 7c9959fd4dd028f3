"""Exact margins (eq. 7-12) against an independent high-precision solve of the same QP."""

from __future__ import annotations

import numpy as np
import pytest

from guard.geometry import margins as margins_module
from guard.geometry.margins import compute_margins, exact_pair_margin, lipschitz_constant
from tests.reference import solvers as reference


def _relu_case(seed: int, n: int = 6, f: int = 12, N: int = 12, sparsity: float = 0.5):
    rng = np.random.default_rng(seed)
    W = rng.normal(size=(n, f))
    b = rng.normal(size=n)
    X = np.maximum(rng.normal(size=(N, f)), 0) * (rng.random((N, f)) > sparsity)
    return X, W, b


def _check_against_reference(X, W, b, nonneg):
    m = compute_margins(X, W, b, nonneg)
    n_qp_path = 0
    for r in range(len(X)):
        i = int(m.pred[r])
        assert np.isnan(m.margins[r, i])
        for j in range(W.shape[0]):
            if j == i:
                continue
            ref = reference.margin(X[r], W, b, i, j, nonneg)
            got = m.margins[r, j]
            if np.isinf(ref):
                assert np.isinf(got)
                continue
            assert got == pytest.approx(ref, rel=1e-6, abs=1e-6), (r, j)
            # closed form is a lower bound of the exact value, never above it
            assert m.closed_form[r, j] <= ref + 1e-9
            n_qp_path += m.closed_form[r, j] < ref - 1e-6
        finite = np.where(np.isnan(m.margins[r]), np.inf, m.margins[r])
        assert m.d_min[r] == pytest.approx(finite.min())
        assert m.nearest_class[r] == int(np.argmin(finite))
    return m, n_qp_path


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_nonneg_active_matches_reference(seed):
    X, W, b = _relu_case(seed)
    m, n_qp_path = _check_against_reference(X, W, b, nonneg=True)
    # the exact path (closed form strictly below the true margin) must be exercised
    assert n_qp_path > 0
    assert m.certificate_gap.max() < 1e-8


@pytest.mark.parametrize("seed", [3, 4])
def test_unconstrained_features_match_reference(seed):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(10, 9)) * 2
    W, b = rng.normal(size=(7, 9)), rng.normal(size=7)
    m, _ = _check_against_reference(X, W, b, nonneg=False)
    # without x >= 0, only the other class constraints (eq. 8) can make the closed form inexact
    assert (
        m.margins[~np.isnan(m.margins)] >= m.closed_form[~np.isnan(m.closed_form)] - 1e-12
    ).all()


def test_nonneg_bound_changes_the_answer():
    """A point on the edge of the orthant: the foot point leaves x >= 0, the QP must not."""
    W = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]])
    b = np.zeros(3)
    x = np.array([2.0, 0.0])  # class 0; the 0|1 foot point is (1, 1)... feasible; 0|2 is not
    m_pos = compute_margins(x[None], W, b, nonneg=True)
    m_free = compute_margins(x[None], W, b, nonneg=False)
    for nonneg, m in ((True, m_pos), (False, m_free)):
        for j in (1, 2):
            assert m.margins[0, j] == pytest.approx(
                reference.margin(x, W, b, 0, j, nonneg), rel=1e-7
            )
    # 0|2 boundary: z0 = z2 means 2*y0 + y1 = 0, only y = 0 in the orthant
    assert m_pos.margins[0, 2] == pytest.approx(2.0)
    assert m_free.margins[0, 2] < 2.0


def test_unreachable_boundary_is_inf():
    # 1-D: z_k = k * y; class 0 for y < 0, class 2 for y > 0: classes 0 and 2 never touch
    # directly except at y = 0 where all tie... add biases so class 1 owns an interval.
    W = np.array([[0.0], [1.0], [2.0]])
    b = np.array([0.0, 0.0, -1.0])  # class 0: y<0, class 1: 0<y<1, class 2: y>1
    x = np.array([-3.0])
    assert reference.margin(x, W, b, 0, 2, False) == np.inf
    m = compute_margins(x[None], W, b, nonneg=False)
    assert m.pred[0] == 0
    assert np.isinf(m.margins[0, 2])
    assert m.margins[0, 1] == pytest.approx(3.0)
    assert m.d_min[0] == pytest.approx(3.0) and m.nearest_class[0] == 1
    d, pt, _ = exact_pair_margin(x, W, b, 0, 2, False)
    assert np.isinf(d) and pt is None


def test_d_min_only_equals_full_and_solves_fewer_qps():
    X, W, b = _relu_case(7, n=10, f=32, N=60)
    full = compute_margins(X, W, b, True)
    fast = compute_margins(X, W, b, True, d_min_only=True)
    np.testing.assert_allclose(fast.d_min, full.d_min, rtol=1e-12)
    np.testing.assert_array_equal(fast.nearest_class, full.nearest_class)
    assert fast.n_qp.sum() < full.n_qp.sum()


def test_flip_point_is_on_the_boundary_and_feasible():
    X, W, b = _relu_case(11, n=8, f=16, N=20)
    m = compute_margins(X, W, b, True)
    for r in range(len(X)):
        y = m.flip_point[r]
        z = W @ y + b
        i, j = m.pred[r], m.nearest_class[r]
        assert abs(z[i] - z[j]) < 1e-8 * (1 + abs(z).max())
        assert (z[i] >= z - 1e-8 * (1 + abs(z).max())).all()
        assert (y >= -1e-10).all()
        assert np.linalg.norm(y - X[r]) == pytest.approx(m.d_min[r], rel=1e-9)


def test_many_classes_and_ties():
    rng = np.random.default_rng(5)
    W = rng.normal(size=(30, 20))
    W[3] = W[4]  # two identical weight rows: their boundary is everywhere or nowhere
    b = rng.normal(size=30)
    X = np.maximum(rng.normal(size=(5, 20)), 0)
    m = compute_margins(X, W, b, True)
    assert np.isfinite(m.d_min).all()
    assert ((m.margins >= 0) | np.isnan(m.margins)).all()


def test_lipschitz_is_largest_singular_value():
    rng = np.random.default_rng(0)
    W = rng.normal(size=(10, 64))
    sigma = lipschitz_constant(W)
    assert sigma == pytest.approx(np.linalg.svd(W, compute_uv=False)[0])
    # eq. 14 on random pairs
    x, y = rng.normal(size=(2, 64))
    assert np.linalg.norm(W @ x - W @ y) <= sigma * np.linalg.norm(x - y) + 1e-12


def test_d_min_only_with_many_classes_refines_lazily():
    """n > 32 with d_min only: the orthant step runs per surviving pair; same d_min as full."""
    X, W, b = _relu_case(13, n=40, f=24, N=15)
    full = compute_margins(X, W, b, True)
    lazy = compute_margins(X, W, b, True, d_min_only=True)
    np.testing.assert_allclose(lazy.d_min, full.d_min, rtol=1e-12)
    np.testing.assert_array_equal(lazy.nearest_class, full.nearest_class)
    assert np.isnan(lazy.margins).sum() > np.isnan(full.margins).sum()  # most pairs pruned


@pytest.mark.parametrize("rivals", [16, 1, 0])
@pytest.mark.parametrize("nonneg", [True, False])
@pytest.mark.parametrize("n,f,seed", [(40, 24, 0), (60, 96, 1), (100, 16, 2)])
def test_lazy_d_min_matches_full_and_reference(
    monkeypatch, n: int, f: int, seed: int, nonneg: bool, rivals: int
):
    """The lazy path (closed forms from the logits, steps 1-2 per visited pair) gives the full
    path's d_min, its flip point is feasible, and the nearest margin equals Clarabel's. With
    fewer rival classes screened first (none: every candidate point is taken as feasible until
    the chunk's joint check), more rows are redone after that check; same answers."""
    monkeypatch.setattr(margins_module, "_RIVALS", rivals)
    X, W, b = _relu_case(seed, n=n, f=f, N=10, sparsity=0.3)
    if not nonneg:
        X = X - 0.5  # signed features
    full = compute_margins(X, W, b, nonneg)
    lazy = compute_margins(X, W, b, nonneg, d_min_only=True)
    np.testing.assert_allclose(lazy.d_min, full.d_min, rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(lazy.nearest_class, full.nearest_class)
    for r in range(len(X)):
        i, j = int(lazy.pred[r]), int(lazy.nearest_class[r])
        ref = reference.margin(X[r], W, b, i, j, nonneg)
        assert lazy.d_min[r] == pytest.approx(ref, rel=1e-6, abs=1e-6)
        y = lazy.flip_point[r]
        z = W @ y + b
        assert abs(z[i] - z[j]) < 1e-8 * (1 + abs(z).max())
        assert (z[i] >= z - 1e-8 * (1 + abs(z).max())).all()
        if nonneg:
            assert (y >= -1e-10).all()
        # the closed forms of the lazy path equal the full path's
        np.testing.assert_allclose(lazy.closed_form[r], full.closed_form[r], rtol=1e-9)


def test_rival_screen_never_rejects_a_feasible_point():
    """The screen's rejection (a rival class beats the predicted one by more than the
    tolerance at an upper bound of the full check's scale) implies the full check of eq. 8
    fails; points it lets through are decided by the full check."""
    rng = np.random.default_rng(0)
    n, f = 50, 20
    W, b = rng.normal(size=(n, f)), rng.normal(size=n)
    screen = margins_module._Screen(
        float(np.sqrt((W * W).sum(axis=1).max())), float(np.abs(b).max())
    )
    rejected = 0
    for _ in range(400):
        y = rng.normal(size=f) * rng.uniform(0.01, 10)
        z = W @ y + b
        i = int(np.argmax(z)) if rng.random() < 0.5 else int(rng.integers(n))
        # near-ties with i at the tolerance's edge as well as clear losers and winners
        rivals = np.argsort(-z)[:5]
        rivals = rivals[rivals != i]
        full = bool(margins_module._satisfies_eq8(y, W, b, np.array(i)))
        assert screen.keeps_top(y, W, b, i, rivals) == full
        if not screen.rivals_ok(y, W, b, i, rivals):
            rejected += 1
            assert not full
    assert rejected > 50


def test_pair_qp_cache_follows_the_head():
    """Pair QPs are cached per head (by a digest of W, b, nonneg): the same answers from a
    warm cache, and a head changed in place gets its own (no stale rows)."""
    X, W, b = _relu_case(21, n=6, f=12, N=20)
    first = compute_margins(X, W, b, True)
    again = compute_margins(X, W, b, True)
    np.testing.assert_array_equal(first.margins, again.margins)
    W2 = W.copy()
    W2[1] += 0.5
    changed = compute_margins(X, W2, b, True)
    margins_module._PROBLEMS.clear()
    fresh = compute_margins(X, W2, b, True)  # built anew
    np.testing.assert_array_equal(changed.margins, fresh.margins)
    W[1] += 0.5  # in place: the digest differs, so does the cache entry
    np.testing.assert_array_equal(compute_margins(X, W, b, True).margins, fresh.margins)
    _check_against_reference(X, W, b, True)


# ---------------------------------------------------------------- the compiled margin QP


@pytest.fixture(scope="module")
def core():
    from guard.geometry import native
    from tests.tools import missing

    if native.core is None:
        missing("the compiled geometry core", f"{native.why_not}; `make setup` builds it")
    return native.core


def _pairs(X, W, b):
    pred = np.argmax(X @ W.T + b, axis=1)
    r, j = np.nonzero(np.arange(W.shape[0])[None, :] != pred[:, None])
    return pred, r, j


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("nonneg", [True, False])
def test_native_qp_matches_reference_and_its_certificate_brackets_it(core, seed, nonneg):
    """Goldfarb-Idnani in the core against the independent solve (Clarabel at tight tolerance):
    every pair it reports solved is the true margin, and d - gap <= true <= d."""
    rng = np.random.default_rng(100 + seed)
    n, f = (4, 6, 12, 25, 3, 8)[seed], (5, 16, 9, 30, 4, 64)[seed]
    W, b = rng.normal(size=(n, f)), rng.normal(size=n)
    X = rng.normal(size=(6, f)) * 2
    if nonneg:  # sparse ReLU features: many bounds y_l >= 0 become active
        X = np.maximum(X, 0) * (rng.random(X.shape) > 0.4)
    pred, r, j = _pairs(X, W, b)
    d, Y, gap, status, steps = core.margin_qps(X, W, b, pred, r, j, nonneg)
    assert set(np.unique(status)) <= {0, 1, 2}
    assert (status == 0).sum() >= len(r) // 3
    assert (steps[status == 0] > 1).any()  # not only closed forms
    for p in np.flatnonzero(status == 0):
        ref = reference.margin(X[r[p]], W, b, int(pred[r[p]]), int(j[p]), nonneg)
        assert d[p] == pytest.approx(ref, rel=1e-6, abs=1e-7), p
        assert d[p] - gap[p] <= ref + 1e-7 and ref <= d[p] + 1e-7
        assert np.linalg.norm(Y[p] - X[r[p]]) == pytest.approx(d[p], rel=1e-12, abs=1e-14)


def test_native_qp_hands_degenerate_pairs_back(core):
    """Identical weight rows (no boundary direction) and a boundary that cannot be reached are
    not reported solved; compute_margins then gives the reference path's answer (inf)."""
    W = np.array([[0.0], [1.0], [2.0], [1.0]])
    b = np.array([0.0, 0.0, -1.0, 0.5])  # class 3 = class 1 shifted: w_1 = w_3
    x = np.array([[0.7]])  # class 1 or 3 on top (z_3 = 1.2 > z_1)
    pred, r, j = _pairs(x, W, b)
    d, _, _, status, _ = core.margin_qps(x, W, b, pred, r, j, False)
    assert pred[0] == 3
    assert status[list(j).index(1)] != 0  # w_3 - w_1 = 0
    m = compute_margins(x, W, b, nonneg=False)
    assert np.isinf(m.margins[0, 1])
    x = np.array([[-3.0]])  # class 0; its boundary with class 2 is never reached
    W3, b3 = W[:3], b[:3]
    pred, r, j = _pairs(x, W3, b3)
    _, _, _, status, _ = core.margin_qps(x, W3, b3, pred, r, j, False)
    assert status[list(j).index(2)] != 0
    assert np.isinf(compute_margins(x, W3, b3, nonneg=False).margins[0, 2])


@pytest.mark.parametrize("seed", range(4))
def test_native_path_equals_the_row_by_row_path(core, seed):
    """compute_margins through the compiled QP (all pairs in one call) and through the numpy
    steps 1-2 plus DAQP row by row: the same margins, nearest class, flip point, certificate
    size, on ReLU and signed features, with ties (duplicate rows) and many classes."""
    from guard.geometry import native

    rng = np.random.default_rng(seed)
    n, f = (10, 40, 7, 3)[seed], (64, 20, 12, 8)[seed]
    W, b = rng.normal(size=(n, f)), rng.normal(size=n)
    X = np.maximum(rng.normal(size=(40, f)), 0) * (rng.random((40, f)) > 0.3)
    X[5] = X[4]
    nonneg = seed != 2
    if not nonneg:
        X = rng.normal(size=(40, f))
    fast = compute_margins(X, W, b, nonneg)
    with native.disabled():
        slow = compute_margins(X, W, b, nonneg)
    np.testing.assert_array_equal(fast.pred, slow.pred)
    np.testing.assert_allclose(fast.margins, slow.margins, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(fast.closed_form, slow.closed_form, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(fast.d_min, slow.d_min, rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(fast.nearest_class, slow.nearest_class)
    np.testing.assert_allclose(fast.flip_point, slow.flip_point, rtol=1e-7, atol=1e-9)
    assert fast.certificate_gap.max() < 1e-8
    # the same pairs solved as QPs on both paths
    assert (fast.n_qp == slow.n_qp).all()


def test_margin_qps_rejects_bad_pairs(core):
    X = np.zeros((2, 3))
    W, b = np.eye(3), np.zeros(3)
    pred = np.array([0, 1])
    for rows, cols in (([0], [0]), ([2], [1]), ([0], [3]), ([-1], [1])):
        with pytest.raises(ValueError):
            core.margin_qps(X, W, b, pred, np.array(rows), np.array(cols), True)
    with pytest.raises(ValueError):
        core.margin_qps(X, W, b[:2], pred, np.array([0]), np.array([1]), True)
