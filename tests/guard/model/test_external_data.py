"""ONNX models whose weights lie in a separate file (``external data``), as torch 2.13's default
exporter writes them (``model.onnx`` + ``model.onnx.data``): the data is found beside the model
FILE whatever the working directory, the in-memory model (``OnnxClassifier.data``, what an
artifact stores) is self-contained and its sha256 covers the weights, and locations outside the
model's directory are refused."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, external_data_helper

from guard.artifact import load_artifact, read_manifest
from guard.cli import main
from guard.errors import ModelError
from guard.model import OnnxClassifier

from .. import onnx_builders as ob


def _save_external(built: ob.Built, path: Path, location: str | None = None) -> None:
    """``built`` saved as torch's exporter does: every initializer in ``<name>.data``."""
    model = built.proto
    onnx.save_model(
        model,
        str(path),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=location or path.name + ".data",
        size_threshold=0,
    )


def _external_tensors(model: onnx.ModelProto) -> list[str]:
    return [
        t.name
        for t in model.graph.initializer
        if t.data_location == TensorProto.EXTERNAL or t.external_data
    ]


@pytest.fixture
def chdir(tmp_path: Path):
    """Run the test in another directory (restored afterwards)."""
    before = os.getcwd()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.chdir(elsewhere)
    yield elsewhere
    os.chdir(before)


def test_external_data_found_beside_the_model_file(tmp_path: Path, chdir: Path) -> None:
    built = ob.gemm_transb1(seed=2)
    d = tmp_path / "models"
    d.mkdir()
    _save_external(built, d / "m.onnx")
    assert _external_tensors(onnx.load(str(d / "m.onnx"), load_external_data=False))
    # a decoy with other weights where the working directory would find it
    _save_external(ob.gemm_transb1(seed=9), chdir / "m.onnx")

    for model in (d / "m.onnx", os.path.relpath(d / "m.onnx")):
        clf = OnnxClassifier(model)
        np.testing.assert_allclose(clf.W, built.W, rtol=1e-7)
        np.testing.assert_allclose(clf.b, built.b, rtol=1e-7)
        x = ob.random_inputs(10, seed=3)
        logits, feats = clf.run(x)
        assert np.abs(logits - built.logits(x)).max() <= 1e-5 * max(1, np.abs(logits).max())
        # self-contained: every tensor embedded, and the sha256 covers them all
        own = onnx.load_from_string(clf.data)
        assert not _external_tensors(own)
        assert {t.name for t in own.graph.initializer} >= {"W", "b", "W1", "b1"}
        assert clf.sha256 == hashlib.sha256(clf.data).hexdigest()
        assert OnnxClassifier(clf.data).sha256 == clf.sha256


def test_sha256_changes_with_the_external_weights(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    _save_external(ob.gemm_transb1(seed=2), a / "m.onnx")
    _save_external(ob.gemm_transb1(seed=3), b / "m.onnx")
    assert (a / "m.onnx").read_bytes() == (b / "m.onnx").read_bytes()  # same graph file
    assert OnnxClassifier(a / "m.onnx").sha256 != OnnxClassifier(b / "m.onnx").sha256


def test_plain_model_keeps_its_file_bytes(tmp_path: Path) -> None:
    built = ob.gemm_transb1(seed=2)
    (tmp_path / "m.onnx").write_bytes(built.data)
    clf = OnnxClassifier(tmp_path / "m.onnx")
    assert clf.data == built.data and clf.sha256 == hashlib.sha256(built.data).hexdigest()


def test_cli_fit_and_score_from_another_directory(tmp_path: Path, chdir: Path) -> None:
    built = ob.gemm_transb1(seed=2)
    d = tmp_path / "models"
    d.mkdir()
    _save_external(built, d / "m.onnx")
    x = ob.random_inputs(60, seed=4)
    np.savez(tmp_path / "train.npz", x=x)
    art = tmp_path / "art"
    argv = ["fit", "--model", d / "m.onnx", "--train", tmp_path / "train.npz", "--out", art]
    assert main([str(a) for a in [*argv, "--calib-fraction", "0", "--no-progress"]]) == 0
    # the artifact's model holds the weights: a decoy m.onnx.data in the cwd changes nothing
    stored = onnx.load(str(art / "model.onnx"), load_external_data=False)
    assert not _external_tensors(stored)
    assert (
        read_manifest(art)["model"]["sha256"]
        == hashlib.sha256((art / "model.onnx").read_bytes()).hexdigest()
    )
    _save_external(ob.gemm_transb1(seed=9), chdir / "m.onnx")
    _save_external(ob.gemm_transb1(seed=9), chdir / "model.onnx")
    guard = load_artifact(art)
    np.testing.assert_allclose(guard.W_, built.W, rtol=1e-7)
    s = guard.score(x[:5])
    np.testing.assert_allclose(s.logits, built.logits(x[:5]), rtol=1e-5, atol=1e-5)
    # scoring with --model checks the external-data model against the artifact: same sha256
    np.savez(tmp_path / "q.npz", x=x[:5])
    argv = ["score", "--artifact", art, "--input", tmp_path / "q.npz", "--model", d / "m.onnx"]
    assert main([str(a) for a in [*argv, "--out", tmp_path / "s.npz", "--no-progress"]]) == 0


def _with_location(built: ob.Built, tmp_path: Path, location: str) -> Path:
    """A model whose tensor 'W' points at ``location`` (a real file with the right bytes)."""
    model = built.proto
    d = tmp_path / "models"
    d.mkdir(exist_ok=True)
    w = next(t for t in model.graph.initializer if t.name == "W")
    raw = onnx.numpy_helper.to_array(w).tobytes()
    target = (d / location) if not os.path.isabs(location) else Path(location)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(raw)
    external_data_helper.set_external_data(w, location=location, offset=0, length=len(raw))
    w.data_location = TensorProto.EXTERNAL
    w.ClearField("raw_data")
    path = d / "m.onnx"
    path.write_bytes(model.SerializeToString())
    return path


@pytest.mark.parametrize(
    "location", ["../evil.bin", "sub/../../evil.bin", "ABS"], ids=["dotdot", "nested", "abs"]
)
def test_refuses_external_data_outside_the_model_directory(tmp_path: Path, location) -> None:
    if location == "ABS":
        location = str(tmp_path / "abs" / "evil.bin")
    path = _with_location(ob.gemm_transb1(seed=2), tmp_path, location)
    with pytest.raises(ModelError) as err:
        OnnxClassifier(path)
    msg = str(err.value)
    assert "'W'" in msg and location in msg and "outside" in msg


def test_refuses_symlink_out_of_the_model_directory(tmp_path: Path) -> None:
    path = _with_location(ob.gemm_transb1(seed=2), tmp_path, "w.bin")
    outside = tmp_path / "outside.bin"
    (path.parent / "w.bin").rename(outside)
    (path.parent / "w.bin").symlink_to(outside)
    with pytest.raises(ModelError, match="outside"):
        OnnxClassifier(path)


def test_external_data_in_a_subfolder_is_fine(tmp_path: Path) -> None:
    built = ob.gemm_transb1(seed=2)
    path = _with_location(built, tmp_path, "weights/w.bin")
    np.testing.assert_allclose(OnnxClassifier(path).W, built.W, rtol=1e-7)


def test_missing_or_short_external_data(tmp_path: Path) -> None:
    built = ob.gemm_transb1(seed=2)
    path = _with_location(built, tmp_path, "w.bin")
    (path.parent / "w.bin").write_bytes(b"\0" * 8)
    with pytest.raises(ModelError, match="w.bin"):
        OnnxClassifier(path)
    (path.parent / "w.bin").unlink()
    with pytest.raises(ModelError, match="not found"):
        OnnxClassifier(path)


def test_external_data_from_bytes_needs_the_path(tmp_path: Path) -> None:
    _save_external(ob.gemm_transb1(seed=2), tmp_path / "m.onnx")
    with pytest.raises(ModelError, match="path"):
        OnnxClassifier((tmp_path / "m.onnx").read_bytes())


# --------------------------------------------------------------------------- real torch exports
torch = pytest.importorskip("torch")


def _net():
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(4 * 6 * 6, 16),
        torch.nn.ReLU(),
        torch.nn.Linear(16, 5),
    ).eval()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_torch_export_saved_with_external_data(tmp_path: Path, chdir: Path) -> None:
    """The legacy exporter's model saved as torch 2.13's default exporter saves it."""
    net = _net()
    x = torch.rand(4, 1, 6, 6)
    d = tmp_path / "models"
    d.mkdir()
    torch.onnx.export(
        net,
        (x,),
        str(d / "tmp.onnx"),
        dynamo=False,
        input_names=["x"],
        output_names=["y"],
        dynamic_axes={"x": {0: "N"}},
    )
    onnx.save_model(
        onnx.load(str(d / "tmp.onnx")),
        str(d / "m.onnx"),
        save_as_external_data=True,
        location="m.onnx.data",
        size_threshold=1024,
    )
    assert (d / "m.onnx.data").is_file()
    clf = OnnxClassifier(d / "m.onnx")
    xs = np.random.default_rng(0).random((7, 1, 6, 6), dtype=np.float32)
    logits, _ = clf.run(xs)
    with torch.no_grad():
        np.testing.assert_allclose(logits, net(torch.from_numpy(xs)).numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(clf.W, net[-1].weight.detach().double().numpy(), rtol=1e-7)


def test_torch_default_exporter(tmp_path: Path, chdir: Path) -> None:
    """torch 2.13's default (dynamo) exporter: external data and a static batch of 4."""
    pytest.importorskip("onnxscript")
    net = _net()
    d = tmp_path / "models"
    d.mkdir()
    torch.onnx.export(net, (torch.rand(4, 1, 6, 6),), str(d / "m.onnx"))
    assert (d / "m.onnx.data").is_file()
    clf = OnnxClassifier(d / "m.onnx")
    assert clf.input_shape[0] == 4
    xs = np.random.default_rng(0).random((9, 1, 6, 6), dtype=np.float32)
    logits, _ = clf.run(xs)
    with torch.no_grad():
        np.testing.assert_allclose(logits, net(torch.from_numpy(xs)).numpy(), rtol=1e-5, atol=1e-5)
