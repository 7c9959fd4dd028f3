"""Training labels must be class indices of the model (0..n-1) of at least two classes: labels
out of range, negative, or all of one class would silently change the OOD score (its
class-conditional components are fitted per label)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from guard import Guard
from guard.cli import main
from guard.errors import InputError

from . import onnx_builders as ob

N = 60


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, ob.Built]:
    built = ob.gemm_transb1(seed=2)
    return built.features(ob.random_inputs(N, seed=1)).astype(np.float32), built


@pytest.mark.parametrize(
    ("change", "needles"),
    [
        (lambda y: np.where(np.arange(N) == 7, ob.N_CLASSES, y), ["0..4", "y[7] = 5", "5 classes"]),
        (lambda y: np.where(np.arange(N) == 3, -1, y), ["0..4", "y[3] = -1"]),
        (lambda y: np.full(N, 99, np.uint8), ["0..4", "99"]),
    ],
    ids=["too-large", "negative", "uint8-too-large"],
)
def test_labels_out_of_range_are_refused(data, change, needles) -> None:
    F, built = data
    y = change(np.arange(N) % ob.N_CLASSES)
    with pytest.raises(InputError) as err:
        Guard(calib_fraction=0).fit_features(F, built.W, built.b, y)
    for needle in needles:
        assert needle in str(err.value), (needle, str(err.value))


def test_single_class_is_refused_with_the_reason(data) -> None:
    F, built = data
    with pytest.raises(InputError) as err:
        Guard(calib_fraction=0).fit_features(F, built.W, built.b, np.full(N, 2))
    msg = str(err.value)
    assert "class 2" in msg and "at least 2" in msg and "omit" in msg


def test_valid_labels_are_kept(data) -> None:
    F, built = data
    y = np.arange(N) % 2  # two of five classes is enough
    guard = Guard(calib_fraction=0).fit_features(F, built.W, built.b, y.astype(np.uint16))
    np.testing.assert_array_equal(guard.train_labels_, y)


def test_cli_refuses_bad_labels(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "m.onnx").write_bytes(ob.gemm_transb1(seed=2).data)
    y = np.arange(N) % ob.N_CLASSES + 1  # 1..5: off by one
    np.savez(tmp_path / "train.npz", x=ob.random_inputs(N, seed=1), y=y)
    argv = ["fit", "--model", tmp_path / "m.onnx", "--train", tmp_path / "train.npz"]
    argv += ["--out", tmp_path / "art", "--calib-fraction", "0", "--no-progress"]
    assert main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("guard: error: ") and "0..4" in err[0]
    assert not (tmp_path / "art").exists()
