"""The exact solvers behind the margins, each against an independent computation."""

from __future__ import annotations

import numpy as np
import pytest

from guard.geometry.orthant import project_hyperplane_orthant
from guard.geometry.qp import pair_margin, pair_margin_nnls
from tests.reference import solvers as reference


def test_orthant_projection_matches_reference_and_certifies():
    import cvxpy as cp

    rng = np.random.default_rng(0)
    P, f = 40, 12
    X = np.maximum(rng.normal(size=(P, f)), 0)
    A = rng.normal(size=(P, f))
    A[:, 3] = 0.0  # a zero coefficient never changes activity
    c = rng.normal(size=P)
    A[5], c[5] = np.abs(A[5]), -1.0  # a.y >= 0 > -1 on y >= 0: empty set
    y, mu, lower = project_hyperplane_orthant(X, A, c)
    for p in range(P):
        v = cp.Variable(f)
        prob = cp.Problem(cp.Minimize(cp.sum_squares(v - X[p])), [A[p] @ v == c[p], v >= 0])
        prob.solve(**reference.TIGHT)
        if prob.status.startswith("infeasible"):
            assert np.isnan(y[p]).all() and np.isinf(lower[p])
            continue
        d = np.linalg.norm(y[p] - X[p])
        assert d == pytest.approx(np.linalg.norm(v.value - X[p]), rel=1e-7, abs=1e-8)
        assert (y[p] >= 0).all() and A[p] @ y[p] == pytest.approx(c[p], abs=1e-10)
        assert lower[p] == pytest.approx(d, rel=1e-10)  # dual bound meets the primal value
    assert np.isnan(y[5]).all()


@pytest.mark.parametrize("nonneg", [True, False])
def test_daqp_and_nnls_agree_with_certificates(nonneg):
    rng = np.random.default_rng(1)
    W, b = rng.normal(size=(10, 32)), rng.normal(size=10)
    X = np.maximum(rng.normal(size=(20, 32)), 0)
    n_finite = 0
    for x in X:
        i = int(np.argmax(W @ x + b))
        for j in range(10):
            if j == i:
                continue
            d1, y1, g1 = pair_margin(x, W, b, i, j, nonneg)
            d2, y2, g2 = pair_margin_nnls(x, W, b, i, j, nonneg)
            if np.isinf(d2):
                assert np.isinf(d1)
                continue
            n_finite += 1
            assert d1 == pytest.approx(d2, rel=1e-10, abs=1e-12)
            assert g1 < 1e-9 and g2 < 1e-9
            np.testing.assert_allclose(y1, y2, atol=1e-8)
    assert n_finite > 100
