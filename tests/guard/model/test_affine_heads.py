"""Affine heads beyond a bare ``Gemm`` / ``MatMul``: constant affine operations after it
(temperature ``Div``, ``Mul``, ``Add`` / ``Sub`` of constants, ``BatchNormalization`` on the
logits) are folded into ``W, b``, and a 1x1 convolution + global mean is read as an affine layer
on the spatially averaged features. Checked against the composition computed independently (by
the builders in float64, and from torch's parameters) and, for the geometry, against the
reference margin solver."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from guard import Guard
from guard.errors import ModelError
from guard.model import OnnxClassifier, split_affine_head
from tests.reference import solvers as reference

from .. import onnx_builders as ob

HEADS = {**ob.FOLDED, **ob.CONV_HEADS}


def _rel_err(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(1.0, float(np.abs(b).max())))


@pytest.mark.parametrize("name", sorted(HEADS))
def test_head_is_folded_into_W_b(name: str) -> None:
    built = HEADS[name](seed=2)
    clf = OnnxClassifier(built.data)
    n_features = ob.N_CHANNELS if name.startswith("conv") else ob.N_FEATURES
    assert (clf.n_classes, clf.n_features) == (ob.N_CLASSES, n_features)
    np.testing.assert_allclose(clf.W, built.W, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(clf.b, built.b, rtol=1e-6, atol=1e-7)

    x = ob.random_inputs(50, seed=4)
    logits, feats = clf.run(x, batch_size=16)
    # the features are the input of the affine head (for the conv head: averaged over space)
    assert _rel_err(feats, built.features(x)) <= 1e-5
    assert _rel_err(logits, built.logits(x)) <= 1e-5
    assert clf.check_affine(logits, feats) <= 1e-5
    # and the logits are what the model computes (before a final Softmax)
    (out,) = ort.InferenceSession(built.data, providers=["CPUExecutionProvider"]).run(
        None, {"x": x}
    )
    if "softmax" in name:
        np.testing.assert_array_equal(out.argmax(1), logits.argmax(1))
    else:
        assert _rel_err(logits, out) <= 1e-5


def test_split_names_the_head_input_as_features() -> None:
    logits, features, _, _ = split_affine_head(ob.gemm_batchnorm(seed=2).proto)
    assert (logits, features) == ("logits", "h")
    logits, features, _, _ = split_affine_head(ob.gemm_div_temperature(seed=2, softmax=True).proto)
    assert (logits, features) == ("logits", "h")


@pytest.mark.parametrize("name", ["gemm_batchnorm", "matmul_mul_add_sub", "conv1x1_gap_flatten"])
def test_guard_margins_match_reference_solver(name: str) -> None:
    built = HEADS[name](seed=5)
    clf = OnnxClassifier(built.data)
    x = ob.random_inputs(120, seed=6)
    guard = Guard(hull_k=16, calib_fraction=0).fit(clf, x)
    xq = ob.random_inputs(4, seed=7)
    s = guard.score(xq)
    feats = built.features(xq)
    for r in range(len(xq)):
        i = int(s.pred[r])
        for j in range(ob.N_CLASSES):
            if j != i:
                ref = reference.margin(feats[r], built.W, built.b, i, j, guard.nonneg_)
                assert s.margins[r, j] == pytest.approx(ref, rel=1e-4, abs=1e-6), (r, j)


# --------------------------------------------------------------------------- refusals
def test_refuses_conv_head_that_is_not_1x1() -> None:
    with pytest.raises(ModelError) as err:
        OnnxClassifier(ob.conv_head(seed=2, kernel=3).data)
    msg = str(err.value)
    assert "head_conv" in msg and "3x3" in msg
    assert "1x1" in msg  # says what is supported


def test_refuses_constant_divided_by_logits() -> None:
    with pytest.raises(ModelError) as err:
        OnnxClassifier(ob.gemm_div_by_logits())
    assert "reciprocal" in str(err.value) and "affine" in str(err.value)


# --------------------------------------------------------------------------- torch export
torch = pytest.importorskip("torch")
nn = torch.nn


class _Body(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.ReLU())

    def features_map(self, x):
        return self.body(x)


class TemperatureHead(_Body):
    """Linear head, then ``/ T + c`` and ``- d``."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(6, 4)
        self.T = 1.7
        self.register_buffer("c", torch.tensor([0.1, -0.2, 0.3, 0.0]))

    def features(self, x):
        return self.features_map(x).mean((2, 3))

    def forward(self, x):
        return self.fc(self.features(x)) / self.T + self.c - 0.5

    def affine(self) -> tuple[np.ndarray, np.ndarray]:
        W = self.fc.weight.detach().double().numpy() / self.T
        b = self.fc.bias.detach().double().numpy() / self.T + self.c.double().numpy() - 0.5
        return W, b


class BatchNormHead(_Body):
    """Linear head, then BatchNorm1d on the logits (eval mode)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(6, 4)
        self.bn = nn.BatchNorm1d(4)
        with torch.no_grad():
            self.bn.running_mean.uniform_(-1, 1)
            self.bn.running_var.uniform_(0.5, 2)
            self.bn.weight.uniform_(0.5, 1.5)
            self.bn.bias.uniform_(-1, 1)

    def features(self, x):
        return self.features_map(x).mean((2, 3))

    def forward(self, x):
        return self.bn(self.fc(self.features(x)))

    def affine(self) -> tuple[np.ndarray, np.ndarray]:
        bn = self.bn
        s = (bn.weight / torch.sqrt(bn.running_var + bn.eps)).detach().double().numpy()
        W = s[:, None] * self.fc.weight.detach().double().numpy()
        mu = bn.running_mean.double().numpy()
        b = s * (self.fc.bias.detach().double().numpy() - mu) + bn.bias.detach().double().numpy()
        return W, b


class ConvPoolHead(_Body):
    """1x1 convolution to the classes, then adaptive average pooling + flatten (or a mean)."""

    def __init__(self, mean: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(6, 4, 1)
        self.mean = mean

    def features(self, x):
        return self.features_map(x).mean((2, 3))

    def forward(self, x):
        maps = self.conv(self.features_map(x))
        if self.mean:
            return maps.mean((2, 3))
        return torch.flatten(nn.functional.adaptive_avg_pool2d(maps, 1), 1)

    def affine(self) -> tuple[np.ndarray, np.ndarray]:
        return (
            self.conv.weight.detach().double().numpy()[:, :, 0, 0],
            self.conv.bias.detach().double().numpy(),
        )


@pytest.mark.parametrize(
    "make",
    [TemperatureHead, BatchNormHead, ConvPoolHead, lambda: ConvPoolHead(mean=True)],
    ids=["temperature", "batchnorm", "conv1x1-pool-flatten", "conv1x1-mean"],
)
def test_torch_heads(make, tmp_path) -> None:
    from guard.model.export import export_torch_to_onnx

    torch.manual_seed(0)
    net = make().eval()
    x = np.random.default_rng(0).random((40, 1, 8, 8), dtype=np.float32)
    path = export_torch_to_onnx(net, torch.from_numpy(x[:4]), tmp_path / "m.onnx")
    clf = OnnxClassifier(path)
    W, b = net.affine()
    np.testing.assert_allclose(clf.W, W, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(clf.b, b, rtol=1e-6, atol=1e-7)
    logits, feats = clf.run(x)
    with torch.no_grad():
        ref_f = net.features(torch.from_numpy(x)).double().numpy()
        ref_z = net(torch.from_numpy(x)).double().numpy()
    assert _rel_err(feats, ref_f) <= 1e-5
    assert _rel_err(logits, ref_z) <= 1e-5
    guard = Guard(hull_k=16, calib_fraction=0).fit(clf, x)  # the numeric check at fit passes
    assert guard.affine_error_ <= 1e-5
    xq = x[:2] * 1.2
    s = guard.score(xq)
    fq = clf.run(xq)[1].astype(np.float64)
    for r in range(len(xq)):
        i = int(s.pred[r])
        for j in range(4):
            if j != i:
                ref = reference.margin(fq[r], W, b, i, j, guard.nonneg_)
                assert s.margins[r, j] == pytest.approx(ref, rel=1e-4, abs=1e-6), (r, j)
