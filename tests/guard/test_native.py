"""The compiled geometry core (guard.geometry._native) against the numpy paths and independent
references: Wolfe's QP against Lawson-Hanson NNLS, hull intervals against the full QP (Clarabel),
the same answers at every batch size, and the fallback when the core is missing."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from guard.geometry import native
from guard.geometry.hull import ConvexHullIndex, HullConfig
from guard.geometry.qp import min_norm_point
from tests.reference import solvers as reference
from tests.tools import missing


@pytest.fixture(scope="module")
def core():
    if native.core is None:
        missing("the compiled geometry core", f"{native.why_not}; `make setup` builds it")
    return native.core


def _points(kind: str, seed: int, N: int, d: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "relu":  # nonnegative, as after a ReLU
        T = np.maximum(rng.normal(size=(N, d)), 0) * rng.gamma(2.0, 1.0, size=(N, 1))
    elif kind == "gauss":  # signed features
        T = rng.normal(size=(N, d)) @ rng.normal(size=(d, d)) * 0.5 + rng.normal(size=d)
    else:  # low-rank with duplicates: degenerate working sets
        T = rng.normal(size=(N, 3)) @ rng.normal(size=(3, d))
        T[: N // 4] = T[0]
    return T.astype(np.float32)


@pytest.mark.parametrize("seed", range(12))
def test_wolfe_min_norm_point_matches_nnls(core, seed: int) -> None:
    rng = np.random.default_rng(seed)
    m, d = int(rng.integers(1, 90)), int(rng.integers(1, 70))
    P = rng.normal(size=(m, d)) + rng.normal(size=d) * rng.uniform(0, 3)
    if seed % 3 == 0:  # duplicated and affinely dependent points
        P = np.vstack([P, P[: m // 2], 0.5 * (P[:1] + P[-1:])])
    a, _ = core.min_norm_point(np.ascontiguousarray(P))
    ref = min_norm_point(P)
    assert a.min() >= 0 and a.sum() == pytest.approx(1.0, abs=1e-12)
    got, want = np.linalg.norm(a @ P), np.linalg.norm(ref @ P)
    scale = np.sqrt((P * P).sum(axis=1).max())
    assert got == pytest.approx(want, rel=1e-9, abs=1e-9 * scale)


@pytest.mark.parametrize("kind", ["relu", "gauss", "degenerate"])
@pytest.mark.parametrize("N,d", [(700, 4), (1500, 24), (400, 64)])
def test_hull_interval_contains_full_qp_and_matches_numpy(core, kind: str, N: int, d: int) -> None:
    T = _points(kind, N + d, N, d)
    rng = np.random.default_rng(d)
    Q = np.vstack(
        [
            T[:3].astype(np.float64) + rng.normal(size=(3, d)) * 0.3,  # near the data
            rng.normal(size=(2, d)) * 3 + T.mean(axis=0),  # far
            rng.dirichlet(np.ones(50)) @ T[:50].astype(np.float64),  # inside
        ]
    )
    kw = dict(k=16, tol=1e-3, subsample=min(N, 200), pool_size=128, add_per_round=16)
    h = ConvexHullIndex(T, HullConfig(engine="native", **kw)).query(Q)
    o = ConvexHullIndex(T, HullConfig(engine="numpy", **kw)).query(Q)
    for qi, q in enumerate(Q):
        if kind == "degenerate":  # (duplicates stall the conic solver) scipy's Lawson-Hanson NNLS
            P = T.astype(np.float64) - q
            ref = float(np.linalg.norm(min_norm_point(P) @ P))
        else:
            ref = reference.hull_distance(T, q)
        assert h.lower[qi] <= ref + 1e-5 and h.upper[qi] >= ref - 1e-5, (qi, ref)
        assert h.upper[qi] - h.lower[qi] <= 1e-3 * h.upper[qi] + 1e-12
        assert np.linalg.norm(q - h.projection[qi]) == pytest.approx(
            h.upper[qi], rel=1e-9, abs=1e-12
        )
    assert h.converged.all()
    # the two engines certify overlapping intervals and agree to the tolerance
    assert (h.lower <= o.upper * (1 + 1e-9) + 1e-12).all()
    assert (o.lower <= h.upper * (1 + 1e-9) + 1e-12).all()
    np.testing.assert_allclose(h.upper, o.upper, rtol=1.1e-3, atol=1e-7)


def test_same_answers_at_every_batch_size(core) -> None:
    T = _points("relu", 3, 20000, 32)
    rng = np.random.default_rng(5)
    Q = np.maximum(rng.normal(size=(40, 32)) * 1.5, 0)
    idx = ConvexHullIndex(T, HullConfig(engine="native"))
    full = idx.query(Q)
    ones = [idx.query(Q[i : i + 1]) for i in range(len(Q))]
    for i, one in enumerate(ones):
        # each query's column generation is its own; only BLAS rounding of the shared GEMM may
        # differ, which the certificate covers: same certified interval up to the tolerance
        assert one.lower[0] <= full.upper[i] * (1 + 1e-9) and full.lower[i] <= one.upper[0] * (
            1 + 1e-9
        )
        assert one.upper[0] == pytest.approx(full.upper[i], rel=1e-3)
    again = idx.query(Q)
    np.testing.assert_array_equal(again.upper, full.upper)  # deterministic
    np.testing.assert_array_equal(again.lower, full.lower)


def test_scan_callback_path_matches_internal_blas(core) -> None:
    """The path a GPU takes (the caller's product per full round) gives the CPU's answers."""
    pytest.importorskip("torch")
    T = _points("relu", 8, 3000, 16)
    Q = np.maximum(np.random.default_rng(1).normal(size=(6, 16)) * 2, 0)
    cpu = ConvexHullIndex(T, HullConfig(engine="native"), device="cpu")
    via = ConvexHullIndex(T, HullConfig(engine="native"), device="torch")
    a, b = cpu.query(Q), via.query(Q)
    assert (a.lower <= b.upper * (1 + 1e-9)).all() and (b.lower <= a.upper * (1 + 1e-9)).all()
    np.testing.assert_allclose(a.upper, b.upper, rtol=1e-3)


def test_fallback_to_numpy_with_a_warning(monkeypatch, caplog) -> None:
    monkeypatch.setattr(native, "core", None)
    monkeypatch.setattr(native, "why_not", "not built")
    monkeypatch.setattr(native, "_warned", False)
    T = _points("relu", 2, 500, 8)
    with caplog.at_level(logging.WARNING, logger="guard.geometry.native"):
        idx = ConvexHullIndex(T)
    assert idx.engine == "numpy"
    assert "compiled geometry core unavailable (not built)" in caplog.text
    h = idx.query(np.ones((2, 8)))
    assert h.converged.all()
    with pytest.raises(ImportError, match="unavailable"):
        ConvexHullIndex(T, HullConfig(engine="native"))


def test_engine_numpy_never_uses_the_core() -> None:
    T = _points("relu", 2, 500, 8)
    assert ConvexHullIndex(T, HullConfig(engine="numpy")).engine == "numpy"
    assert ConvexHullIndex(T, HullConfig(scan="pca", pca_k=2)).engine == "numpy"
