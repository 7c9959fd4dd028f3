"""Tests of guard.model: splitting an ONNX classifier into features and its final affine layer."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from guard.errors import InputError, ModelError
from guard.model import OnnxClassifier, split_affine_head

from . import onnx_builders as ob


def _rel_err(a: np.ndarray, b: np.ndarray) -> float:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return float(np.abs(a - b).max() / max(1.0, float(np.abs(b).max())))


def _plain_run(data: bytes, x: np.ndarray) -> np.ndarray:
    """The original model's single output, from a plain onnxruntime session."""
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    (out,) = sess.run(None, {"x": x})
    return out


@pytest.fixture(scope="module")
def x() -> np.ndarray:
    return ob.random_inputs(64, seed=3)


# --------------------------------------------------------------------------- splittable graphs
@pytest.mark.parametrize("name", sorted(ob.SPLITTABLE))
def test_split_recovers_affine_head(name: str, x: np.ndarray) -> None:
    built = ob.SPLITTABLE[name](seed=2)
    clf = OnnxClassifier(built.data)

    assert clf.n_classes == ob.N_CLASSES
    assert clf.n_features == ob.N_FEATURES
    assert clf.W.shape == (ob.N_CLASSES, ob.N_FEATURES) and clf.W.dtype == np.float64
    assert clf.b.shape == (ob.N_CLASSES,) and clf.b.dtype == np.float64
    # The weights the graph means, after transposes / alpha / beta (float32 -> float64 exactly).
    np.testing.assert_allclose(clf.W, built.W, rtol=1e-7, atol=0)
    np.testing.assert_allclose(clf.b, built.b, rtol=1e-7, atol=0)
    assert clf.input_name == "x"
    assert clf.input_shape == (None, *ob.INPUT_SHAPE)

    logits, feats = clf.run(x, batch_size=20)  # several batches, last one partial
    assert logits.shape == (len(x), ob.N_CLASSES) and logits.dtype == np.float32
    assert feats.shape == (len(x), ob.N_FEATURES) and feats.dtype == np.float32
    # The features are the penultimate layer (the Relu output), not something else.
    assert _rel_err(feats, built.features(x)) <= 1e-5
    assert feats.min() >= 0
    # features @ W^T + b reproduces the logits the model returns.
    recon = feats.astype(np.float64) @ clf.W.T + clf.b
    assert _rel_err(recon, logits) <= 1e-5
    assert clf.check_affine(logits, feats) <= 1e-5

    out = _plain_run(built.data, x)
    if "softmax" in name:
        # The returned logits are the pre-softmax ones ...
        assert _rel_err(logits, built.logits(x)) <= 1e-5
        assert not np.allclose(logits, out, atol=1e-3)
        # ... and order the classes as the model's (log-)probabilities do.
        np.testing.assert_array_equal(logits.argmax(axis=1), out.argmax(axis=1))
        if "log" in name:
            np.testing.assert_allclose(
                out, logits - np.log(np.exp(logits).sum(1, keepdims=True)), rtol=1e-4, atol=1e-5
            )
        else:
            np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-5)
    else:
        assert _rel_err(logits, out) <= 1e-6


def test_split_affine_head_names() -> None:
    logits, features, W, b = split_affine_head(ob.gemm_softmax(seed=2).proto)
    assert (logits, features) == ("z", "h")
    assert W.flags.c_contiguous and b.shape == (ob.N_CLASSES,)
    logits, features, _, _ = split_affine_head(ob.matmul_add(seed=2, bias_first=True).proto)
    assert (logits, features) == ("logits", "h")


def test_gemm_alpha_beta_are_applied() -> None:
    built = ob.gemm_transb0_alpha_beta(seed=2)
    raw = {t.name: onnx.numpy_helper.to_array(t) for t in built.proto.graph.initializer}
    clf = OnnxClassifier(built.data)
    np.testing.assert_array_equal(clf.W, ob.GEMM_ALPHA * raw["B"].astype(np.float64).T)
    np.testing.assert_array_equal(clf.b, ob.GEMM_BETA * raw["C"].astype(np.float64))


def test_sha256_and_path_input(tmp_path) -> None:
    import hashlib

    built = ob.gemm_transb1(seed=2)
    path = tmp_path / "m.onnx"
    path.write_bytes(built.data)
    from_path = OnnxClassifier(path)
    from_str = OnnxClassifier(str(path))
    from_bytes = OnnxClassifier(built.data)
    digest = hashlib.sha256(built.data).hexdigest()
    assert from_path.sha256 == from_str.sha256 == from_bytes.sha256 == digest
    assert from_path.data == built.data
    with pytest.raises(InputError, match="not found"):
        OnnxClassifier(tmp_path / "missing.onnx")


def test_unparseable_model_is_model_error() -> None:
    with pytest.raises(ModelError, match="cannot parse"):
        OnnxClassifier(b"\x08\x07 this is not an onnx protobuf \xff\xff\xff")


# --------------------------------------------------------------------------- torch export
def test_torch_export_splits(tmp_path) -> None:
    torch = pytest.importorskip("torch")
    from guard.model.export import export_torch_to_onnx

    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 6, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Conv2d(6, 10, 3, stride=2, padding=1),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(10, 7),
    )
    example = torch.rand(4, 3, 16, 16)
    path = export_torch_to_onnx(net, example, tmp_path / "cnn.onnx")

    clf = OnnxClassifier(path)
    assert clf.n_classes == 7
    assert clf.n_features == 10
    assert clf.input_shape[1:] == (3, 16, 16)
    linear = net[-1]
    np.testing.assert_allclose(clf.W, linear.weight.detach().double().numpy(), rtol=1e-7)
    np.testing.assert_allclose(clf.b, linear.bias.detach().double().numpy(), rtol=1e-7)

    x = np.random.default_rng(0).random((9, 3, 16, 16), dtype=np.float32)
    logits, feats = clf.run(x)
    assert feats.shape == (9, 10)
    with torch.no_grad():
        expected_feats = net[:-1](torch.from_numpy(x)).double().numpy()
        expected_logits = net(torch.from_numpy(x)).double().numpy()
    assert _rel_err(feats, expected_feats) <= 1e-5
    assert _rel_err(logits, expected_logits) <= 1e-5
    assert _rel_err(feats.astype(np.float64) @ clf.W.T + clf.b, logits) <= 1e-5
    clf.check_affine(logits, feats)


# --------------------------------------------------------------------------- refusals
def test_refuses_model_ending_in_relu() -> None:
    with pytest.raises(ModelError, match="Relu") as err:
        OnnxClassifier(ob.ends_in_relu())
    assert "final_relu" in str(err.value)
    assert "affine" in str(err.value)


def test_refuses_add_of_two_computed_tensors() -> None:
    with pytest.raises(ModelError, match="Add") as err:
        OnnxClassifier(ob.ends_in_add_of_tensors())
    assert "final_add" in str(err.value)
    assert "constant" in str(err.value)


def test_refuses_two_outputs() -> None:
    with pytest.raises(ModelError, match="single output") as err:
        OnnxClassifier(ob.two_outputs())
    assert "logits" in str(err.value) and "'h'" in str(err.value)


def test_model_errors_are_guard_errors() -> None:
    from guard.errors import GuardError

    with pytest.raises(GuardError):
        OnnxClassifier(ob.ends_in_relu())


# --------------------------------------------------------------------------- prepare()
@pytest.fixture(scope="module")
def clf() -> OnnxClassifier:
    return OnnxClassifier(ob.gemm_transb1(seed=2).data)


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        (np.zeros((3, 1, 5, 6), np.float32), r"shape \('N', 1, 6, 6\)"),
        (np.zeros((3, 2, 6, 6), np.float32), r"shape \('N', 1, 6, 6\)"),
        (np.zeros((3, 36), np.float32), r"shape \('N', 1, 6, 6\)"),
        (np.zeros((1, 6, 6), np.float32), r"shape \('N', 1, 6, 6\)"),
        (np.zeros((2, 1, 1, 6, 6), np.float32), r"shape \('N', 1, 6, 6\)"),
        (np.zeros((3, 1, 6, 6), np.int64), "dtype int64"),
        (np.zeros((3, 1, 6, 6), bool), "dtype bool"),
        (np.zeros((0, 1, 6, 6), np.float32), "empty batch"),
    ],
    ids=["wrong-h", "wrong-c", "flat", "ndim3", "ndim5", "int64", "bool", "empty"],
)
def test_prepare_rejects(clf: OnnxClassifier, bad: np.ndarray, match: str) -> None:
    with pytest.raises(InputError, match=match):
        clf.prepare(bad)
    with pytest.raises(InputError):
        clf.run(bad)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_prepare_rejects_non_finite(clf: OnnxClassifier, value: float, dtype: type) -> None:
    x = ob.random_inputs(4, seed=5).astype(dtype)
    x[2, 0, 3, 1] = value
    with pytest.raises(InputError, match="NaN or Inf"):
        clf.prepare(x)


def test_prepare_float64_becomes_float32(clf: OnnxClassifier) -> None:
    x = ob.random_inputs(5, seed=6).astype(np.float64)
    out = clf.prepare(x)
    assert out.dtype == np.float32 and out.flags.c_contiguous
    np.testing.assert_array_equal(out, x.astype(np.float32))


def test_prepare_scales_uint8(clf: OnnxClassifier) -> None:
    rng = np.random.default_rng(7)
    u8 = rng.integers(0, 256, size=(6, 1, 6, 6), dtype=np.uint8)
    u8[0, 0, 0, 0], u8[0, 0, 0, 1] = 0, 255
    out = clf.prepare(u8)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, u8.astype(np.float32) / 255.0, rtol=0, atol=1e-7)
    assert out.max() == pytest.approx(1.0) and out.min() == 0.0
    z8, f8 = clf.run(u8)
    zf, ff = clf.run(u8.astype(np.float32) / 255.0)
    np.testing.assert_allclose(z8, zf, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(f8, ff, rtol=1e-6, atol=1e-6)


# --------------------------------------------------------------------------- check_affine
def test_check_affine_detects_tampered_weights(x: np.ndarray) -> None:
    clf = OnnxClassifier(ob.gemm_transb1(seed=2).data)
    logits, feats = clf.run(x)
    assert clf.check_affine(logits, feats) <= 1e-5
    clf.W = clf.W * 2
    with pytest.raises(ModelError, match="logits differ"):
        clf.check_affine(logits, feats)


def test_check_affine_detects_tampered_bias(x: np.ndarray) -> None:
    clf = OnnxClassifier(ob.gemm_transb1(seed=2).data)
    logits, feats = clf.run(x)
    clf.b = clf.b + 1.0
    with pytest.raises(ModelError):
        clf.check_affine(logits, feats)


def test_intra_op_threads_do_not_spin() -> None:
    """The geometry runs on the same cores right after the model: onnxruntime's threads must
    sleep when a run ends, not spin-wait (see ``guard.model.onnx._session_options``)."""
    clf = OnnxClassifier(ob.gemm_transb1(seed=1).data)
    opts = clf.session.get_session_options()
    assert opts.get_session_config_entry("session.intra_op.allow_spinning") == "0"
