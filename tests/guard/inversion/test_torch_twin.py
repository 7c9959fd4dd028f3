"""The torch twin of an ONNX classifier (onnx2torch, or a torch module given as such): checked
against onnxruntime on logits *and* features, refused when it differs, for every head the
adapter reads (Gemm, MatMul + Add, folded constants, a 1x1 conv + global mean), fixed batch
sizes, and the real default model and its torch weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from guard.errors import InputError, ModelError  # noqa: E402
from guard.model import OnnxClassifier  # noqa: E402
from guard.model.torch_twin import TWIN_RTOL, TorchTwin, import_onnx2torch  # noqa: E402
from tests.guard import onnx_builders as ob  # noqa: E402

ASSETS = Path(__file__).resolve().parents[3] / "guard" / "assets"

BUILDERS = {
    "gemm": ob.gemm_transb1,
    "matmul_add": ob.matmul_add,
    "temperature_softmax": lambda: ob.gemm_div_temperature(softmax=True),
    "batchnorm": ob.gemm_batchnorm,
    "conv_head": ob.conv_head,
    "conv_reducemean": lambda: ob.conv_head(pool="mean"),
}


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_onnx2torch_twin_matches_onnxruntime(name: str) -> None:
    built = BUILDERS[name]()
    model = OnnxClassifier(built.data)
    x = ob.random_inputs(6, seed=1)
    twin = TorchTwin.from_onnx(model, x)
    assert twin.check is not None and twin.check.n == 6
    assert twin.check.logits_error <= TWIN_RTOL and twin.check.features_error <= TWIN_RTOL
    z, f = twin.run(ob.random_inputs(4, seed=2))
    # the independent numpy reference of the builders, in float64
    np.testing.assert_allclose(f, built.features(ob.random_inputs(4, seed=2)), atol=1e-5)
    np.testing.assert_allclose(z, f @ built.W.T + built.b, atol=1e-4)
    # gradients flow to the input
    xt = torch.from_numpy(ob.random_inputs(2, seed=3)).requires_grad_(True)
    twin.features(xt).sum().backward()
    assert xt.grad is not None and torch.isfinite(xt.grad).all()


def test_a_twin_that_differs_is_refused() -> None:
    model = OnnxClassifier(ob.gemm_transb1().data)
    x = ob.random_inputs(5)
    twin = TorchTwin.from_onnx(model, x)
    with torch.no_grad():
        next(iter(twin.module.parameters())).mul_(1.001)  # a slightly different model
    with pytest.raises(ModelError, match="differs from onnxruntime.*refused"):
        twin.verify(model, x)


def test_fixed_batch_model_runs_in_chunks() -> None:
    data = ob.with_input_shape(ob.gemm_transb1().data, [3, 1, 6, 6])
    model = OnnxClassifier(data)
    twin = TorchTwin.from_onnx(model, ob.random_inputs(7))
    assert twin.fixed_batch == 3
    z, f = twin.run(ob.random_inputs(5, seed=4))
    assert f.shape == (5, ob.N_FEATURES)
    np.testing.assert_allclose(f, model.run(ob.random_inputs(5, seed=4))[1], atol=1e-5)


def test_torch_module_twin_and_wrong_shapes() -> None:
    built = ob.gemm_transb1()
    model = OnnxClassifier(built.data)
    lin = torch.nn.Linear(ob.N_IN, ob.N_FEATURES)
    head = torch.nn.Linear(ob.N_FEATURES, ob.N_CLASSES)
    with torch.no_grad():
        lin.weight.copy_(torch.from_numpy(built.W1.T))
        lin.bias.copy_(torch.from_numpy(built.b1))
        head.weight.copy_(torch.from_numpy(built.W.astype(np.float32)))
        head.bias.copy_(torch.from_numpy(built.b.astype(np.float32)))
    net = torch.nn.ModuleDict({"lin": lin, "head": head})

    def features(x):
        return torch.relu(lin(x.reshape(len(x), -1)))

    twin = TorchTwin.from_module(net, features, head, model, ob.random_inputs(4))
    assert twin.check is not None and twin.check.features_error <= TWIN_RTOL
    with pytest.raises(InputError, match="expected input of shape"):
        TorchTwin.from_onnx(model, np.zeros((2, 3, 6, 6), np.float32))
    with pytest.raises(ModelError, match="differs from onnxruntime"):  # another head
        TorchTwin.from_module(net, features, lambda f: head(f) + 1.0, model, ob.random_inputs(4))


def test_onnx2torch_import_leaves_no_torchvision_stand_in() -> None:
    import sys

    import_onnx2torch()
    tv = sys.modules.get("torchvision")
    assert tv is None or hasattr(tv, "__file__")  # a real torchvision, never the stand-in


def test_default_model_twins_match_onnxruntime() -> None:
    from guard.model.nets import FashionResNet

    model = OnnxClassifier(ASSETS / "fmnist_resnet.onnx")
    x = np.random.default_rng(0).random((4, 1, 28, 28), dtype=np.float32)
    converted = TorchTwin.from_onnx(model, x)
    net = FashionResNet()
    net.load_state_dict(torch.load(ASSETS / "fmnist_resnet.pt", map_location="cpu"))
    native = TorchTwin.from_module(net, net.features, net.fc, model, x)
    for twin in (converted, native):
        assert twin.check is not None
        assert max(twin.check.logits_error, twin.check.features_error) <= TWIN_RTOL
