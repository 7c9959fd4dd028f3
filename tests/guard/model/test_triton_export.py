"""``guard export triton``: the repository entry parses as Triton's ModelConfig (tritonclient's
``model_config_pb2``), agrees with the ONNX graph's names, dims and dtypes, and the graph
computes the logits and features of the original model (checked against the builders' float64
ground truth) at any batch size, for several kinds of heads and input shapes.

The real Triton serving the export is tested in ``tests/server/upstream``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from guard import Guard, OnnxClassifier, save_artifact
from guard.errors import InputError
from guard.model.triton import export_triton, served_outputs
from server import cli
from tests.guard import onnx_builders as ob

ONNX_TO_TRITON = {
    onnx.TensorProto.FLOAT: model_config_pb2.TYPE_FP32,
    onnx.TensorProto.INT64: model_config_pb2.TYPE_INT64,
}

BUILDERS = {
    "gemm": lambda: ob.gemm_transb1(),
    "softmax_after_logits": lambda: ob.gemm_softmax(),
    "temperature_softmax": lambda: ob.gemm_div_temperature(softmax=True),
    "conv_head_gap": lambda: ob.conv_head(pool="gap"),
    "conv_head_mean": lambda: ob.conv_head(pool="mean"),
}


def parse_config(entry: Path) -> model_config_pb2.ModelConfig:
    config = model_config_pb2.ModelConfig()
    text_format.Parse((entry / "config.pbtxt").read_text(), config)
    return config


def graph_dims(value: onnx.ValueInfoProto) -> list[int | str]:
    return [
        d.dim_param if d.HasField("dim_param") else d.dim_value
        for d in value.type.tensor_type.shape.dim
    ]


def check_entry(entry: Path, name: str, max_batch: int) -> model_config_pb2.ModelConfig:
    """The config parses, and each of its tensors is the graph's (name, dtype, dims + batch)."""
    config = parse_config(entry)
    assert config.name == name and config.platform == "onnxruntime_onnx"
    assert config.max_batch_size == max_batch and config.HasField("dynamic_batching")
    graph = onnx.load(str(entry / "1" / "model.onnx")).graph
    onnx.checker.check_model(onnx.load(str(entry / "1" / "model.onnx")), full_check=True)
    for specs, values in ((config.input, graph.input), (config.output, graph.output)):
        assert [t.name for t in specs] == [v.name for v in values]
        for spec, value in zip(specs, values):
            assert spec.data_type == ONNX_TO_TRITON[value.type.tensor_type.elem_type]
            dims = graph_dims(value)
            assert dims[0] == "batch"  # the dynamic batch axis Triton batches on
            assert list(spec.dims) == [d if isinstance(d, int) else -1 for d in dims[1:]]
    return config


@pytest.mark.parametrize("kind", sorted(BUILDERS))
def test_export_agrees_with_the_config_and_the_model(kind: str, tmp_path: Path) -> None:
    built = BUILDERS[kind]()
    clf = OnnxClassifier(built.data)
    x = ob.random_inputs(7, seed=3)
    done = export_triton(clf, tmp_path, "m", x, max_batch_size=32)
    assert done.config.is_file() and done.model.is_file()
    config = check_entry(done.directory, "m", 32)
    logits, features = served_outputs(clf)
    names = [t.name for t in config.output]
    assert logits in names and features == "features" in names
    dims = {t.name: list(t.dims) for t in config.output}
    assert dims[logits] == [ob.N_CLASSES] and dims[features] == [clf.n_features]
    assert list(config.input[0].dims) == list(ob.INPUT_SHAPE)
    session = ort.InferenceSession(str(done.model), providers=["CPUExecutionProvider"])
    for n in (1, 2, 7):  # any batch size
        z, f = session.run([logits, features], {"x": x[:n]})
        np.testing.assert_allclose(f, built.features(x[:n]), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(z, built.logits(x[:n]), rtol=1e-5, atol=1e-5)
    if kind == "softmax_after_logits":  # the model's own output (probabilities) is kept
        assert logits != "logits" or "logits" in names
        assert len(names) == 3


def test_fixed_batch_model_gets_a_dynamic_batch_axis(tmp_path: Path) -> None:
    built = ob.gemm_transb1()
    clf = OnnxClassifier(ob.with_input_shape(built.data, [4, 1, 6, 6]))
    assert clf.fixed_batch == 4
    x = ob.random_inputs(5, seed=1)
    done = export_triton(clf, tmp_path, "fixed", x)
    check_entry(done.directory, "fixed", 64)
    session = ort.InferenceSession(str(done.model), providers=["CPUExecutionProvider"])
    (f,) = session.run(["features"], {"x": x[:3]})
    np.testing.assert_allclose(f, built.features(x[:3]), rtol=1e-5, atol=1e-5)


def test_features_name_taken_by_the_graph(tmp_path: Path) -> None:
    built = ob.gemm_transb1()
    proto = built.proto
    for node in proto.graph.node:  # call the hidden layer "features" already
        node.output[:] = ["features" if o == "h" else o for o in node.output]
        node.input[:] = ["features" if i == "h" else i for i in node.input]
    clf = OnnxClassifier(proto.SerializeToString())
    assert served_outputs(clf) == ("logits", "guard_features")
    done = export_triton(clf, tmp_path, "m", ob.random_inputs(3, seed=0))
    assert [t.name for t in parse_config(done.directory).output] == ["logits", "guard_features"]


def test_refusals(tmp_path: Path) -> None:
    clf = OnnxClassifier(ob.gemm_transb1().data)
    x = ob.random_inputs(3, seed=0)
    export_triton(clf, tmp_path, "m", x)
    with pytest.raises(InputError, match="already exists"):
        export_triton(clf, tmp_path, "m", x)
    export_triton(clf, tmp_path, "m", x, overwrite=True, max_batch_size=8)
    assert parse_config(tmp_path / "m").max_batch_size == 8
    for bad in ("", "a/b", "..", 'q"'):
        with pytest.raises(InputError, match="model name"):
            export_triton(clf, tmp_path, bad, x)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]  # no temporary left behind


def test_cli_export(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    built = ob.gemm_transb1()
    clf = OnnxClassifier(built.data)
    guard = Guard(hull_k=16, calib_fraction=0).fit(clf, ob.random_inputs(300, seed=0))
    art = save_artifact(guard, tmp_path / "tiny_art")
    repo = tmp_path / "repo"
    assert cli.main(["export", "triton", "--artifact", str(art), "--out", str(repo)]) == 0
    out = capsys.readouterr().out
    assert "config.pbtxt" in out and "--upstream" in out
    check_entry(repo / "tiny_art", "tiny_art", 64)
    rc = cli.main(["export", "triton", "--artifact", str(art), "--out", str(repo), "--name", "x"])
    assert rc == 0 and (repo / "x" / "config.pbtxt").is_file()
    assert cli.main(["export", "triton", "--artifact", str(art), "--out", str(repo)]) == 2
    assert "already exists" in capsys.readouterr().err
    rc = cli.main(["export", "triton", "--artifact", str(tmp_path / "missing"), "--out", str(repo)])
    assert rc == 2 and capsys.readouterr().err.startswith("guard: error:")


def test_export_of_a_3_channel_resnet(tmp_path: Path) -> None:
    """Another architecture and input shape: the 3x32x32 ResNet-20 among the built-in models."""
    path = Path(__file__).resolve().parents[3] / "guard" / "assets" / "fmnist_resnet20_rgb.onnx"
    clf = OnnxClassifier(path)
    x = np.random.default_rng(0).random((5, 3, 32, 32), dtype=np.float32)
    done = export_triton(clf, tmp_path, "rgb", x)
    config = check_entry(done.directory, "rgb", 64)
    assert list(config.input[0].dims) == [3, 32, 32]
    assert {t.name: list(t.dims) for t in config.output} == {"logits": [10], "features": [64]}
    session = ort.InferenceSession(str(done.model), providers=["CPUExecutionProvider"])
    z, f = session.run(["logits", "features"], {"input": x[:2]})
    want_z, want_f = clf.run(x[:2])
    np.testing.assert_allclose(f, want_f, rtol=0, atol=1e-5)
    np.testing.assert_allclose(z, want_z, rtol=0, atol=1e-5)
    np.testing.assert_allclose(z, f.astype(np.float64) @ clf.W.T + clf.b, rtol=0, atol=1e-4)
