"""guard.geometry.radii: the training radii on several processes, in resumable chunks, equal to
compute_margins' d_min."""

from __future__ import annotations

import numpy as np
import pytest

from guard.geometry import radii as radii_mod
from guard.geometry.margins import compute_margins
from guard.geometry.radii import training_radii


def _case(N: int = 3000, n: int = 10, f: int = 32, seed: int = 0):
    rng = np.random.default_rng(seed)
    W = rng.normal(size=(n, f)) / np.sqrt(f)
    b = rng.normal(size=n) * 0.1
    X = (np.maximum(rng.normal(size=(N, f)) + 0.3, 0) * (rng.random((N, f)) > 0.5)).astype(
        np.float32
    )
    return X, W, b


@pytest.mark.parametrize("workers", [1, 2])
def test_equal_to_compute_margins(workers: int, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("GUARD_CHECKPOINT_DIR", str(tmp_path))
    X, W, b = _case()
    ref = compute_margins(X, W, b, True, d_min_only=True)
    got = training_radii(X, W, b, True, workers=workers, chunk=500, checkpoint=True)
    np.testing.assert_array_equal(got.d_min, ref.d_min)
    np.testing.assert_array_equal(got.pred, ref.pred)
    assert list(tmp_path.iterdir()) == []  # checkpoints removed once complete


def test_resumes_from_finished_chunks(tmp_path, monkeypatch) -> None:
    """A chunk already on disk is not recomputed (its stored values are used); a truncated one
    is recomputed."""
    monkeypatch.setenv("GUARD_CHECKPOINT_DIR", str(tmp_path))
    X, W, b = _case(N=1200)
    folder = tmp_path / radii_mod._fingerprint(X, W, b, True, 400)
    folder.mkdir()
    np.savez(folder / f"{400:012d}.npz", pred=np.full(400, 7), d_min=np.full(400, 123.0))
    (folder / f"{800:012d}.npz").write_bytes(b"PK\x03\x04 cut short")
    got = training_radii(X, W, b, True, workers=1, chunk=400, checkpoint=True)
    ref = compute_margins(X, W, b, True, d_min_only=True)
    assert (got.d_min[400:800] == 123.0).all() and (got.pred[400:800] == 7).all()
    np.testing.assert_array_equal(got.d_min[:400], ref.d_min[:400])
    np.testing.assert_array_equal(got.d_min[800:], ref.d_min[800:])
    assert not folder.exists()


def test_other_inputs_do_not_share_checkpoints() -> None:
    X, W, b = _case(N=100)
    a = radii_mod._fingerprint(X, W, b, True, 50)
    assert a != radii_mod._fingerprint(X, W, b, False, 50)
    assert a != radii_mod._fingerprint(X, W * 2, b, True, 50)
    X2 = X.copy()
    X2[5, 3] += 1
    assert a != radii_mod._fingerprint(X2, W, b, True, 50)
