"""Pre-image solvers (eq. 15-18) against answers known independently.

With a linear feature map ``N(x) = A x`` eq. 17-18 is a least-norm problem: without active bounds
``x* = x_r + A^T (A A^T)^{-1} (t - A x_r)``; with the box it is a QP, and the ball (eq. 15-16)
an SOCP, both solved by Clarabel at tight tolerance. The perimeter (``= lam``, non-convex) has a
closed form when ``A`` has orthogonal rows of equal norm. A small ReLU map checks the nonlinear
case (constraint met, pixels in the domain, multi-start keeps the closest), and an unreachable
target must come back ``met=False`` with a message, never silently.
"""

from __future__ import annotations

import cvxpy as cp
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from guard.errors import InputError  # noqa: E402
from guard.inversion.solver import SolverConfig, invert  # noqa: E402
from guard.inversion.targets import BallTarget, BoundaryTarget, PointTarget  # noqa: E402
from tests.reference.solvers import TIGHT  # noqa: E402

P, F = 36, 5  # a 6x6 "image", 5 features
SHAPE = (1, 6, 6)
CFG = SolverConfig(dtype="float64", rtol=1e-6, atol=1e-7)


def _linear(A: np.ndarray):
    At = torch.from_numpy(A)
    return lambda x: x.reshape(len(x), -1).to(torch.float64) @ At.T


def _setup(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((F, P)) / np.sqrt(P)
    xr = rng.uniform(0.2, 0.8, SHAPE)
    return A, xr


def _qp(A: np.ndarray, xr: np.ndarray, t: np.ndarray) -> np.ndarray:
    x = cp.Variable(P)
    prob = cp.Problem(cp.Minimize(cp.sum_squares(x - xr.ravel())), [A @ x == t, x >= 0, x <= 1])
    prob.solve(**TIGHT)
    assert prob.status == "optimal"
    return x.value


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_point_target_is_the_least_norm_solution(seed: int) -> None:
    A, xr = _setup(seed)
    v = 0.05 * np.random.default_rng(seed + 10).standard_normal(F)
    x_star = xr.ravel() + A.T @ v  # inside the box: the closed form is the answer
    assert 0 < x_star.min() and x_star.max() < 1
    t = A @ x_star
    r = invert(_linear(A), PointTarget(t), xr, config=CFG)
    assert r.met, r.message
    assert r.image.shape == SHAPE and r.image.dtype == np.float32
    np.testing.assert_allclose(r.image.ravel(), x_star, atol=1e-6)  # float32 image
    assert r.pixel_distance == pytest.approx(np.linalg.norm(A.T @ v), rel=1e-5)
    assert r.start_residual == pytest.approx(np.linalg.norm(t - A @ xr.ravel()), rel=1e-6)
    assert r.feature_residual <= r.tolerance


@pytest.mark.parametrize("seed", [0, 1])
def test_point_target_with_active_bounds_matches_a_qp_solver(seed: int) -> None:
    A, xr = _setup(seed)
    v = 1.5 * np.random.default_rng(seed + 20).standard_normal(F)
    t = A @ np.clip(xr.ravel() + A.T @ v, 0, 1)  # reachable inside the box
    ref = _qp(A, xr, t)
    n_active = int(np.sum((ref < 1e-7) | (ref > 1 - 1e-7)))
    assert n_active >= 3  # the box matters
    r = invert(_linear(A), PointTarget(t), xr, config=CFG)
    assert r.met, r.message
    assert 0 <= r.image.min() and r.image.max() <= 1
    np.testing.assert_allclose(r.image.ravel(), ref, atol=2e-6)


def test_ball_inequality_matches_an_socp_solver() -> None:
    A, xr = _setup(3)
    c = A @ np.clip(xr.ravel() + A.T @ np.full(F, 2.0), 0, 1)
    lam = 0.3 * np.linalg.norm(A @ xr.ravel() - c)
    x = cp.Variable(P)
    cons = [cp.norm(A @ x - c) <= lam, x >= 0, x <= 1]
    prob = cp.Problem(cp.Minimize(cp.sum_squares(x - xr.ravel())), cons)
    # 1e-10 is beyond what Clarabel reaches on this cone ("inaccurate"); 1e-9 is reached
    prob.solve(**(TIGHT | {k: 1e-9 for k in TIGHT if k.startswith("tol")}))
    assert prob.status == "optimal"
    r = invert(_linear(A), BallTarget(c, lam), xr, config=CFG)
    assert r.met, r.message
    np.testing.assert_allclose(r.image.ravel(), x.value, atol=2e-6)
    assert np.linalg.norm(A @ r.image.ravel() - c) <= lam * (1 + 1e-6)


@pytest.mark.parametrize("inside", [True, False])
def test_perimeter_has_the_closed_form_of_orthogonal_rows(inside: bool) -> None:
    # A with orthogonal rows of norm s: moving the features by w costs ||w|| / s pixels, so the
    # closest image on the sphere ||A x - c|| = lam moves the features radially by |lam - ||u|||.
    rng = np.random.default_rng(4)
    s = 0.5
    Q = np.linalg.qr(rng.standard_normal((P, F)))[0].T  # (F, P) orthonormal rows
    A = s * Q
    xr = rng.uniform(0.3, 0.7, SHAPE)
    u_dir = rng.standard_normal(F)
    u = 0.2 * u_dir / np.linalg.norm(u_dir)  # A x_r - c
    c = A @ xr.ravel() - u
    lam = 0.35 if inside else 0.1
    w = (lam / np.linalg.norm(u) - 1) * u
    x_star = xr.ravel() + A.T @ w / s**2
    r = invert(_linear(A), BallTarget(c, lam, perimeter=True), xr, config=CFG)
    assert r.met, r.message
    assert r.start_residual == pytest.approx(abs(lam - 0.2), rel=1e-6)
    assert r.pixel_distance == pytest.approx(abs(lam - 0.2) / s, rel=1e-5)
    np.testing.assert_allclose(r.image.ravel(), x_star, atol=1e-6)


def _relu_map(seed: int):
    g = torch.Generator().manual_seed(seed)
    W1 = torch.randn(16, P, generator=g, dtype=torch.float64) / np.sqrt(P)
    b1 = torch.full((16,), 0.1, dtype=torch.float64)
    W2 = torch.randn(F, 16, generator=g, dtype=torch.float64) / 4

    def fmap(x):
        return torch.relu(torch.relu(x.reshape(len(x), -1).to(torch.float64) @ W1.T + b1) @ W2.T)

    return fmap


def test_nonlinear_map_meets_the_constraint_and_keeps_the_best_start() -> None:
    fmap = _relu_map(0)
    rng = np.random.default_rng(5)
    xr = rng.uniform(0, 1, SHAPE)
    goal = rng.uniform(0, 1, SHAPE)
    with torch.no_grad():
        t = fmap(torch.from_numpy(goal[None]))[0].numpy()  # reachable: goal maps to it
    starts = [xr, goal, rng.uniform(0, 1, SHAPE)]
    cfg = SolverConfig(dtype="float64")
    r = invert(fmap, PointTarget(t), xr, starts=starts, config=cfg)
    assert r.met, r.message
    assert len(r.starts) == 3
    met = [s for s in r.starts if s.met]
    assert r.pixel_distance == min(s.pixel_distance for s in met)
    assert r.pixel_distance <= np.linalg.norm(goal - xr) + 1e-9  # goal itself is feasible
    assert 0 <= r.image.min() and r.image.max() <= 1
    assert r.feature_residual <= 1e-3 * r.start_residual + cfg.atol


def test_unreachable_target_is_reported_not_met() -> None:
    A, xr = _setup(6)
    t = A @ xr.ravel() + 50.0  # far outside A([0, 1]^P)
    r = invert(_linear(A), PointTarget(t), xr, config=SolverConfig(dtype="float64", max_outer=8))
    assert not r.met
    assert r.message.startswith("NOT met")
    assert r.feature_residual > r.tolerance
    assert 0 <= r.image.min() and r.image.max() <= 1


def test_time_budget_stops_and_still_judges() -> None:
    fmap = _relu_map(1)
    rng = np.random.default_rng(7)
    xr = rng.uniform(0, 1, SHAPE)
    t = np.full(F, 3.0)
    r = invert(fmap, PointTarget(t), xr, config=SolverConfig(dtype="float64", max_seconds=0.05))
    assert r.seconds < 5
    assert np.isfinite(r.feature_residual) and r.met == (r.feature_residual <= r.tolerance)


def test_bad_inputs_are_refused() -> None:
    A, xr = _setup(0)
    fmap = _linear(A)
    with pytest.raises(InputError, match="outside the domain"):
        invert(fmap, PointTarget(np.zeros(F)), xr + 2.0)
    with pytest.raises(InputError, match="start 0 has shape"):
        invert(fmap, PointTarget(np.zeros(F)), xr, starts=[np.zeros(3)])
    with pytest.raises(InputError, match="the target has 4 features"):
        invert(fmap, PointTarget(np.zeros(4)), xr, config=CFG)
    with pytest.raises(InputError, match="radius > 0"):
        BallTarget(np.zeros(F), 0.0, perimeter=True)
    with pytest.raises(InputError, match="bounds"):
        SolverConfig(bounds=(1.0, 0.0))


def test_one_relu_layer_matches_its_exact_qp() -> None:
    # N(x) = relu(A x + b): for a reachable target t the pre-images form a polyhedron
    # (A_k x + b_k = t_k where t_k > 0, A_k x + b_k <= 0 where t_k = 0), so eq. 17-18 is a
    # convex QP with a unique answer, though the solver only sees a nonlinear map. The target
    # has dead units the reference must switch on and off (the ReLU homotopy's case).
    rng = np.random.default_rng(8)
    A = rng.standard_normal((F, P)) / np.sqrt(P)
    b = -0.5 * A.sum(axis=1) + 0.05
    At, bt = torch.from_numpy(A), torch.from_numpy(b)
    slope = [0.0]

    def fmap(x):
        z = x.reshape(len(x), -1).to(torch.float64) @ At.T + bt
        return torch.nn.functional.leaky_relu(z, slope[0]) if slope[0] else torch.relu(z)

    xr = rng.uniform(0, 1, SHAPE)
    goal = rng.uniform(0, 1, SHAPE)
    t = np.maximum(A @ goal.ravel() + b, 0.0)
    zr = A @ xr.ravel() + b
    assert ((t > 0) & (zr < 0)).any() or ((t == 0) & (zr > 0)).any()
    x = cp.Variable(P)
    on = t > 0
    cons = [A[on] @ x + b[on] == t[on], A[~on] @ x + b[~on] <= 0, x >= 0, x <= 1]
    cp.Problem(cp.Minimize(cp.sum_squares(x - xr.ravel())), cons).solve(**TIGHT)
    best = float(np.linalg.norm(x.value - xr.ravel()))

    def relax(a: float) -> None:
        slope[0] = a

    cfg = SolverConfig(dtype="float64", rtol=1e-6, atol=1e-7)
    r = invert(fmap, PointTarget(t), xr, starts=[xr, goal], config=cfg, relax=relax)
    assert r.met, r.message
    assert slope[0] == 0.0  # the model itself afterwards
    assert r.pixel_distance == pytest.approx(best, rel=1e-4)
    np.testing.assert_allclose(r.image.ravel(), x.value, atol=1e-4)


def test_decision_boundary_target_matches_a_qp_solver() -> None:
    # eq. 7-8 through a linear feature map: z = W A x + b; the image closest to x_r with
    # z_i = z_j >= z_k is a QP. x_r is well inside class i, so reaching the boundary matters.
    A, xr = _setup(9)
    rng = np.random.default_rng(9)
    W, b = rng.standard_normal((4, F)), 0.1 * rng.standard_normal(4)
    z = W @ (A @ xr.ravel()) + b
    i = int(np.argmax(z))
    j = int(np.argsort(z)[-2])
    x = cp.Variable(P)
    zz = W @ (A @ x) + b
    cons = [zz[i] == zz[j], x >= 0, x <= 1] + [zz[k] <= zz[i] for k in range(4) if k not in (i, j)]
    cp.Problem(cp.Minimize(cp.sum_squares(x - xr.ravel())), cons).solve(**TIGHT)
    target = BoundaryTarget(W, b, i, j)
    r = invert(_linear(A), target, xr, config=CFG)
    assert r.met, r.message
    np.testing.assert_allclose(r.image.ravel(), x.value, atol=2e-6)
    zi = W @ (A @ r.image.ravel().astype(np.float64)) + b
    assert abs(zi[i] - zi[j]) <= 1e-5 and np.delete(zi, [i, j]).max() <= zi[i] + 1e-6
    # the residual is the largest violation in feature units
    phi = A @ xr.ravel()
    assert target.residual(phi) == pytest.approx(
        abs(z[i] - z[j]) / np.linalg.norm(W[i] - W[j]), rel=1e-12
    )
