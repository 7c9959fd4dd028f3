"""Models exported with a fixed batch size (torch's exporters without dynamic axes write the
example's batch size into the graph) run on any number of inputs: in chunks of that size, the
last one padded and the padding's outputs dropped."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from guard import Guard
from guard.cli import main
from guard.errors import InputError
from guard.model import OnnxClassifier

from .. import onnx_builders as ob

SIZES = [1, 3, 4, 5, 9]


def _one_by_one(clf: OnnxClassifier, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    runs = [clf.run(x[i : i + 1]) for i in range(len(x))]
    return np.concatenate([z for z, _ in runs]), np.concatenate([f for _, f in runs])


@pytest.mark.parametrize("n", SIZES)
def test_static_batch_onnx_model(n: int) -> None:
    built = ob.gemm_transb1(seed=2)
    static = OnnxClassifier(ob.with_input_shape(built.data, [4, *ob.INPUT_SHAPE]))
    dynamic = OnnxClassifier(built.data)
    assert static.input_shape[0] == 4
    x = ob.random_inputs(n, seed=n)
    z, f = static.run(x, batch_size=2)  # the model's own batch size wins
    z1, f1 = _one_by_one(dynamic, x)
    assert z.shape == (n, ob.N_CLASSES) and f.shape == (n, ob.N_FEATURES)
    np.testing.assert_allclose(z, z1, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(f, f1, rtol=1e-6, atol=1e-6)


def test_batch_size_must_be_positive() -> None:
    clf = OnnxClassifier(ob.gemm_transb1(seed=2).data)
    with pytest.raises(InputError, match="batch"):
        clf.run(ob.random_inputs(3), batch_size=0)


def test_fit_score_and_cli_on_a_static_batch_model(tmp_path: Path) -> None:
    built = ob.gemm_transb1(seed=2)
    static = ob.with_input_shape(built.data, [4, *ob.INPUT_SHAPE])
    x = ob.random_inputs(150, seed=5)  # not a multiple of 4
    guard = Guard(hull_k=16, calib_fraction=0).fit(OnnxClassifier(static), x)
    ref = Guard(hull_k=16, calib_fraction=0).fit(OnnxClassifier(built.data), x)
    np.testing.assert_allclose(guard.train_features_, ref.train_features_, rtol=1e-6, atol=1e-6)
    s, s_ref = guard.score(x[:7]), ref.score(x[:7])
    np.testing.assert_allclose(s.d_min, s_ref.d_min, rtol=1e-5, atol=1e-6)
    (tmp_path / "m.onnx").write_bytes(static)
    np.savez(tmp_path / "train.npz", x=x)
    np.savez(tmp_path / "q.npz", x=x[:1])
    fit = ["fit", "--model", tmp_path / "m.onnx", "--train", tmp_path / "train.npz"]
    fit += ["--out", tmp_path / "art", "--calib-fraction", "0", "--no-progress"]
    assert main([str(a) for a in fit]) == 0
    score = ["score", "--artifact", tmp_path / "art", "--input", tmp_path / "q.npz"]
    assert main([str(a) for a in [*score, "--out", tmp_path / "s.npz", "--no-progress"]]) == 0
    with np.load(tmp_path / "s.npz") as res:
        np.testing.assert_allclose(res["d_min"], s_ref.d_min[:1], rtol=1e-5, atol=1e-6)


torch = pytest.importorskip("torch")


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("n", SIZES)
def test_torch_static_batch_export(n: int, tmp_path: Path) -> None:
    """torch's export without dynamic axes: the batch of 4 is baked into Reshape shapes too."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1),
        torch.nn.BatchNorm2d(4),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(4 * 6 * 6, 8),
        torch.nn.ReLU(),
        torch.nn.Linear(8, 5),
    ).eval()
    example = torch.rand(4, 1, 6, 6)
    kw = {"dynamo": False, "input_names": ["x"], "output_names": ["y"]}
    torch.onnx.export(net, (example,), str(tmp_path / "static.onnx"), **kw)
    kw["dynamic_axes"] = {"x": {0: "N"}, "y": {0: "N"}}
    torch.onnx.export(net, (example,), str(tmp_path / "dynamic.onnx"), **kw)
    static, dynamic = (
        OnnxClassifier(tmp_path / "static.onnx"),
        OnnxClassifier(tmp_path / "dynamic.onnx"),
    )
    assert static.input_shape == (4, 1, 6, 6) and dynamic.input_shape[0] is None
    x = np.random.default_rng(n).random((n, 1, 6, 6), dtype=np.float32)
    z, f = static.run(x)
    z1, f1 = _one_by_one(dynamic, x)
    np.testing.assert_allclose(z, z1, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(f, f1, rtol=1e-5, atol=1e-6)
