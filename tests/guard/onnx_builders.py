"""Small ONNX classifiers built directly with ``onnx.helper`` (no torch), shared by the tests.

Every model takes ``x`` float32 ``[N, 1, 6, 6]`` and computes the same nonlinear feature
extractor ``h = Relu(Flatten(x) @ W1 + b1)`` (8 features) followed by a head that varies per
builder. Each builder returns a :class:`Built` holding the serialized model and the affine layer
it *means* (``logits = h @ W.T + b``, after transposes, alpha and beta), so the tests can compare
what :class:`guard.model.OnnxClassifier` reads against ground truth.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

INPUT_SHAPE = (1, 6, 6)
N_IN = int(np.prod(INPUT_SHAPE))
N_FEATURES = 8
N_CLASSES = 5
OPSET = 17
IR_VERSION = 8


@dataclass(frozen=True)
class Built:
    """A built model: its bytes, the intended final layer and the extractor's weights."""

    data: bytes
    W: np.ndarray  # (n, f) float64, as the logits use it
    b: np.ndarray  # (n,) float64
    W1: np.ndarray  # (N_IN, f) float32 feature extractor
    b1: np.ndarray  # (f,) float32

    @property
    def proto(self) -> onnx.ModelProto:
        return onnx.load_from_string(self.data)

    def features(self, x: np.ndarray) -> np.ndarray:
        """Reference features, computed in float64 with numpy."""
        flat = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
        return np.maximum(flat @ self.W1.astype(np.float64) + self.b1.astype(np.float64), 0.0)

    def logits(self, x: np.ndarray) -> np.ndarray:
        return self.features(x) @ self.W.T + self.b


def random_inputs(n: int, seed: int = 0) -> np.ndarray:
    """``n`` float32 inputs of shape ``[1, 6, 6]`` uniform in [0, 1)."""
    return np.random.default_rng(seed).random((n, *INPUT_SHAPE), dtype=np.float32)


def _extractor(seed: int) -> tuple[list, list, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    # The bias centres the inputs (uniform in [0, 1)) and adds a small positive offset, so the
    # features vary from input to input and most of them stay alive.
    W1 = (rng.standard_normal((N_IN, N_FEATURES)) / np.sqrt(N_IN)).astype(np.float32)
    b1 = (-0.5 * W1.sum(axis=0) + 0.1 + 0.2 * rng.random(N_FEATURES)).astype(np.float32)
    nodes = [
        helper.make_node("Flatten", ["x"], ["flat"], axis=1, name="flatten"),
        helper.make_node("MatMul", ["flat", "W1"], ["pre"], name="fc1"),
        helper.make_node("Add", ["pre", "b1"], ["pre_b"], name="fc1_bias"),
        helper.make_node("Relu", ["pre_b"], ["h"], name="relu"),
    ]
    inits = [numpy_helper.from_array(W1, "W1"), numpy_helper.from_array(b1, "b1")]
    return nodes, inits, W1, b1


def _head_weights(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed + 1000)
    W = (2.0 * rng.standard_normal((N_CLASSES, N_FEATURES))).astype(np.float32)
    b = (0.1 * rng.standard_normal(N_CLASSES)).astype(np.float32)
    return W, b


def _model(nodes: list, inits: list, outputs: list[tuple[str, list]] | None = None) -> bytes:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *INPUT_SHAPE])
    outs = [
        helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)
        for name, shape in (outputs or [("logits", ["N", N_CLASSES])])
    ]
    graph = helper.make_graph(nodes, "tiny_classifier", [x], outs, initializer=inits)
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="guard-tests"
    )
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    return model.SerializeToString()


def _built(data: bytes, W: np.ndarray, b: np.ndarray, W1: np.ndarray, b1: np.ndarray) -> Built:
    return Built(data, np.asarray(W, np.float64), np.asarray(b, np.float64), W1, b1)


# --------------------------------------------------------------------------- splittable heads
def gemm_transb1(seed: int = 0) -> Built:
    """(a) ``Gemm(h, W, b)`` with ``transB = 1`` (what torch's Linear exports)."""
    nodes, inits, W1, b1 = _extractor(seed)
    W, b = _head_weights(seed)
    nodes.append(helper.make_node("Gemm", ["h", "W", "b"], ["logits"], transB=1, name="head"))
    inits += [numpy_helper.from_array(W, "W"), numpy_helper.from_array(b, "b")]
    return _built(_model(nodes, inits), W, b, W1, b1)


GEMM_ALPHA = 0.5
GEMM_BETA = 2.0


def gemm_transb0_alpha_beta(seed: int = 0) -> Built:
    """(b) ``Gemm(h, B, C)`` with ``transB = 0``, ``alpha = 0.5``, ``beta = 2``: W = alpha B^T."""
    nodes, inits, W1, b1 = _extractor(seed)
    W, b = _head_weights(seed)
    B = np.ascontiguousarray(W.T)  # (f, n)
    nodes.append(
        helper.make_node(
            "Gemm",
            ["h", "B", "C"],
            ["logits"],
            transB=0,
            alpha=GEMM_ALPHA,
            beta=GEMM_BETA,
            name="head",
        )
    )
    inits += [numpy_helper.from_array(B, "B"), numpy_helper.from_array(b, "C")]
    W_eff = GEMM_ALPHA * B.astype(np.float64).T
    b_eff = GEMM_BETA * b.astype(np.float64)
    return _built(_model(nodes, inits), W_eff, b_eff, W1, b1)


def matmul_add(seed: int = 0, *, bias_first: bool = False) -> Built:
    """(c) ``Add(MatMul(h, W^T), b)``; ``bias_first`` puts the bias as the Add's first input."""
    nodes, inits, W1, b1 = _extractor(seed)
    W, b = _head_weights(seed)
    nodes.append(helper.make_node("MatMul", ["h", "Wt"], ["mm"], name="head_matmul"))
    add_inputs = ["bias", "mm"] if bias_first else ["mm", "bias"]
    nodes.append(helper.make_node("Add", add_inputs, ["logits"], name="head_bias"))
    inits += [
        numpy_helper.from_array(np.ascontiguousarray(W.T), "Wt"),
        numpy_helper.from_array(b, "bias"),
    ]
    return _built(_model(nodes, inits), W, b, W1, b1)


def gemm_softmax(seed: int = 0, *, log: bool = False) -> Built:
    """(d) ``Softmax(Gemm(h, W, b))``: the model outputs probabilities, not logits."""
    nodes, inits, W1, b1 = _extractor(seed)
    W, b = _head_weights(seed)
    nodes.append(helper.make_node("Gemm", ["h", "W", "b"], ["z"], transB=1, name="head"))
    op = "LogSoftmax" if log else "Softmax"
    nodes.append(helper.make_node(op, ["z"], ["probs"], axis=1, name="softmax"))
    inits += [numpy_helper.from_array(W, "W"), numpy_helper.from_array(b, "b")]
    return _built(_model(nodes, inits, [("probs", ["N", N_CLASSES])]), W, b, W1, b1)


def constant_weights(seed: int = 0) -> Built:
    """(e) ``Gemm`` whose weights and bias come from Constant nodes instead of initializers."""
    nodes, inits, W1, b1 = _extractor(seed)
    W, b = _head_weights(seed)
    nodes += [
        helper.make_node(
            "Constant", [], ["Wc"], value=numpy_helper.from_array(W, "Wc_value"), name="head_weight"
        ),
        helper.make_node(
            "Constant", [], ["bc"], value=numpy_helper.from_array(b, "bc_value"), name="head_bias"
        ),
        helper.make_node("Gemm", ["h", "Wc", "bc"], ["logits"], transB=1, name="head"),
    ]
    return _built(_model(nodes, inits), W, b, W1, b1)


def constant_weights_matmul(seed: int = 0) -> Built:
    """(e') ``MatMul`` + ``Add`` whose weights come from a Constant node through an Identity."""
    nodes, inits, W1, b1 = _extractor(seed)
    W, b = _head_weights(seed)
    nodes += [
        helper.make_node(
            "Constant",
            [],
            ["Wt_c"],
            value=numpy_helper.from_array(np.ascontiguousarray(W.T), "Wt_value"),
            name="head_weight",
        ),
        helper.make_node("Identity", ["Wt_c"], ["Wt_id"], name="head_weight_id"),
        helper.make_node("MatMul", ["h", "Wt_id"], ["mm"], name="head_matmul"),
        helper.make_node("Add", ["mm", "bias"], ["logits"], name="head_bias"),
    ]
    inits.append(numpy_helper.from_array(b, "bias"))
    return _built(_model(nodes, inits), W, b, W1, b1)


SPLITTABLE = {
    "gemm_transb1": gemm_transb1,
    "gemm_transb0_alpha_beta": gemm_transb0_alpha_beta,
    "matmul_add_bias_second": lambda seed=0: matmul_add(seed, bias_first=False),
    "matmul_add_bias_first": lambda seed=0: matmul_add(seed, bias_first=True),
    "gemm_softmax": gemm_softmax,
    "gemm_logsoftmax": lambda seed=0: gemm_softmax(seed, log=True),
    "constant_weights_gemm": constant_weights,
    "constant_weights_matmul": constant_weights_matmul,
}


# --------------------------------------------------------------------------- refused models
def ends_in_relu(seed: int = 0) -> bytes:
    """Gemm head followed by Relu: the output is not affine in any tensor."""
    nodes, inits, _, _ = _extractor(seed)
    W, b = _head_weights(seed)
    nodes += [
        helper.make_node("Gemm", ["h", "W", "b"], ["z"], transB=1, name="head"),
        helper.make_node("Relu", ["z"], ["logits"], name="final_relu"),
    ]
    inits += [numpy_helper.from_array(W, "W"), numpy_helper.from_array(b, "b")]
    return _model(nodes, inits)


def ends_in_add_of_tensors(seed: int = 0) -> bytes:
    """``Add(MatMul(h, A), MatMul(h, B))``: an Add of two computed tensors, no constant bias."""
    nodes, inits, _, _ = _extractor(seed)
    W, _ = _head_weights(seed)
    nodes += [
        helper.make_node("MatMul", ["h", "A"], ["za"], name="head_a"),
        helper.make_node("MatMul", ["h", "B"], ["zb"], name="head_b"),
        helper.make_node("Add", ["za", "zb"], ["logits"], name="final_add"),
    ]
    inits += [
        numpy_helper.from_array(np.ascontiguousarray(W.T), "A"),
        numpy_helper.from_array(np.ascontiguousarray(0.5 * W.T), "B"),
    ]
    return _model(nodes, inits)


def two_outputs(seed: int = 0) -> bytes:
    """A Gemm classifier that also outputs its features."""
    nodes, inits, _, _ = _extractor(seed)
    W, b = _head_weights(seed)
    nodes.append(helper.make_node("Gemm", ["h", "W", "b"], ["logits"], transB=1, name="head"))
    inits += [numpy_helper.from_array(W, "W"), numpy_helper.from_array(b, "b")]
    return _model(nodes, inits, [("logits", ["N", N_CLASSES]), ("h", ["N", N_FEATURES])])


# --------------------------------------------------------------------------- other input shapes
def with_input_shape(data: bytes, dims: list) -> bytes:
    """The same model with the input ``x`` declared as ``dims`` (e.g. a static batch
    ``[4, 1, 6, 6]``, or ``["N", 6, 6, 1]`` for images as N x H x W x C). The extractor starts
    with ``Flatten``, so any shape of 36 values per input works."""
    model = onnx.load_from_string(data)
    x = model.graph.input[0]
    x.type.tensor_type.shape.Clear()
    for d in dims:
        dim = x.type.tensor_type.shape.dim.add()
        if isinstance(d, str):
            dim.dim_param = d
        else:
            dim.dim_value = d
    onnx.checker.check_model(model, full_check=True)
    return model.SerializeToString()


# --------------------------------------------------------------------------- folded affine heads
# Constant affine operations after the final Gemm / MatMul (temperature, BatchNormalization on the
# logits, Add / Sub of constants): the logits stay affine in the same features ``h``; ``W`` and
# ``b`` of each Built are the composition, computed here in float64.
TEMPERATURE = 2.5
BN_EPSILON = 1e-3


def gemm_div_temperature(seed: int = 0, *, softmax: bool = False) -> Built:
    """``Gemm(h, W, b) / T`` (temperature scaling), optionally followed by ``Softmax``."""
    nodes, inits, W1, b1 = _extractor(seed)
    W, b = _head_weights(seed)
    nodes += [
        helper.make_node("Gemm", ["h", "W", "b"], ["z"], transB=1, name="head"),
        helper.make_node("Div", ["z", "T"], ["logits"], name="temperature"),
    ]
    inits += [
        numpy_helper.from_array(W, "W"),
        numpy_helper.from_array(b, "b"),
        numpy_helper.from_array(np.array(TEMPERATURE, np.float32), "T"),
    ]
    outputs = None
    if softmax:
        nodes.append(helper.make_node("Softmax", ["logits"], ["probs"], axis=1, name="softmax"))
        outputs = [("probs", ["N", N_CLASSES])]
    T = np.float64(np.float32(TEMPERATURE))
    return _built(_model(nodes, inits, outputs), W / T, b / T, W1, b1)


def matmul_mul_add_sub(seed: int = 0) -> Built:
    """``d - (s * MatMul(h, W^T) + c)``: constants first and second, per-class vectors of shape
    ``(n,)`` and ``(1, n)``: the logits are ``h (-s W)^T + (d - c)``."""
    nodes, inits, W1, b1 = _extractor(seed)
    W, _ = _head_weights(seed)
    rng = np.random.default_rng(seed + 2000)
    s = (0.5 + rng.random((1, N_CLASSES))).astype(np.float32)
    c = rng.standard_normal(N_CLASSES).astype(np.float32)
    d = rng.standard_normal(N_CLASSES).astype(np.float32)
    nodes += [
        helper.make_node("MatMul", ["h", "Wt"], ["mm"], name="head_matmul"),
        helper.make_node("Mul", ["s", "mm"], ["scaled"], name="head_scale"),
        helper.make_node("Add", ["scaled", "c"], ["shifted"], name="head_shift"),
        helper.make_node("Sub", ["d", "shifted"], ["logits"], name="head_flip"),
    ]
    inits += [
        numpy_helper.from_array(np.ascontiguousarray(W.T), "Wt"),
        numpy_helper.from_array(s, "s"),
        numpy_helper.from_array(c, "c"),
        numpy_helper.from_array(d, "d"),
    ]
    s64 = s.astype(np.float64).reshape(-1)
    W_eff = -s64[:, None] * W.astype(np.float64)
    b_eff = d.astype(np.float64) - c.astype(np.float64)
    return _built(_model(nodes, inits), W_eff, b_eff, W1, b1)


def gemm_batchnorm(seed: int = 0) -> Built:
    """``BatchNormalization(Gemm(h, W, b))`` on the logits (inference mode)."""
    nodes, inits, W1, b1 = _extractor(seed)
    W, b = _head_weights(seed)
    rng = np.random.default_rng(seed + 3000)
    gamma = (0.5 + rng.random(N_CLASSES)).astype(np.float32)
    beta = rng.standard_normal(N_CLASSES).astype(np.float32)
    mean = rng.standard_normal(N_CLASSES).astype(np.float32)
    var = (0.5 + rng.random(N_CLASSES)).astype(np.float32)
    nodes += [
        helper.make_node("Gemm", ["h", "W", "b"], ["z"], transB=1, name="head"),
        helper.make_node(
            "BatchNormalization",
            ["z", "gamma", "beta", "mean", "var"],
            ["logits"],
            epsilon=BN_EPSILON,
            name="logit_bn",
        ),
    ]
    inits += [numpy_helper.from_array(W, "W"), numpy_helper.from_array(b, "b")]
    for name, arr in (("gamma", gamma), ("beta", beta), ("mean", mean), ("var", var)):
        inits.append(numpy_helper.from_array(arr, name))
    eps = np.float64(np.float32(BN_EPSILON))
    scale = gamma.astype(np.float64) / np.sqrt(var.astype(np.float64) + eps)
    W_eff = scale[:, None] * W.astype(np.float64)
    b_eff = scale * (b.astype(np.float64) - mean) + beta
    return _built(_model(nodes, inits), W_eff, b_eff, W1, b1)


FOLDED = {
    "gemm_div_temperature": gemm_div_temperature,
    "gemm_div_temperature_softmax": lambda seed=0: gemm_div_temperature(seed, softmax=True),
    "matmul_mul_add_sub": matmul_mul_add_sub,
    "gemm_batchnorm": gemm_batchnorm,
}


# --------------------------------------------------------------------------- 1x1 conv heads
N_CHANNELS = 8  # channels of the conv extractor = features of the conv heads


@dataclass(frozen=True)
class BuiltConvHead(Built):
    """A model whose features are the spatial mean of ``Relu(x * W1[c] + b1[c])`` (a 1x1
    convolution of the input, ``W1`` and ``b1`` of shape ``(N_CHANNELS,)``), followed by a 1x1
    convolution to the classes and a global mean: ``logits = mean(h) @ W.T + b``."""

    def features(self, x: np.ndarray) -> np.ndarray:
        x64 = np.asarray(x, dtype=np.float64)[:, 0]  # (N, 6, 6)
        w1 = self.W1.astype(np.float64)[None, :, None, None]
        b1 = self.b1.astype(np.float64)[None, :, None, None]
        return np.maximum(x64[:, None] * w1 + b1, 0.0).mean(axis=(2, 3))


def conv_head(seed: int = 0, *, pool: str = "gap", kernel: int = 1) -> Built:
    """Conv extractor ``h (N, 8, 6, 6)``, then ``Conv(h, Wc, bc)`` with a ``kernel`` x ``kernel``
    kernel to the classes and a global mean over space: ``pool`` = ``"gap"``
    (GlobalAveragePool + Flatten), ``"mean"`` (ReduceMean, keepdims 0) or ``"mean_reshape"``
    (ReduceMean, keepdims 1, + Reshape to (-1, n)). ``kernel`` 3 (padding 1) is not affine in
    the mean features and is refused."""
    rng = np.random.default_rng(seed)
    w1 = (0.5 + rng.random(N_CHANNELS)).astype(np.float32) * np.where(
        np.arange(N_CHANNELS) % 2, 1, -1
    ).astype(np.float32)
    b1 = (0.6 * rng.random(N_CHANNELS) - 0.1 + 0.5 * (w1 < 0)).astype(np.float32)
    Wc = (rng.standard_normal((N_CLASSES, N_CHANNELS, kernel, kernel))).astype(np.float32)
    bc = (0.1 * rng.standard_normal(N_CLASSES)).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["pre"], kernel_shape=[1, 1], name="stem"),
        helper.make_node("Relu", ["pre"], ["h"], name="relu"),
        helper.make_node(
            "Conv",
            ["h", "Wc", "bc"],
            ["maps"],
            kernel_shape=[kernel, kernel],
            pads=[kernel // 2] * 4,
            name="head_conv",
        ),
    ]
    inits = [
        numpy_helper.from_array(w1.reshape(N_CHANNELS, 1, 1, 1), "w1"),
        numpy_helper.from_array(Wc, "Wc"),
        numpy_helper.from_array(bc, "bc"),
        numpy_helper.from_array(b1, "b1"),
    ]
    if pool == "gap":
        nodes += [
            helper.make_node("GlobalAveragePool", ["maps"], ["pooled"], name="head_pool"),
            helper.make_node("Flatten", ["pooled"], ["logits"], axis=1, name="head_flatten"),
        ]
    elif pool == "mean":
        nodes.append(
            helper.make_node(
                "ReduceMean", ["maps"], ["logits"], axes=[2, 3], keepdims=0, name="head_mean"
            )
        )
    elif pool == "mean_reshape":
        nodes += [
            helper.make_node(
                "ReduceMean", ["maps"], ["pooled"], axes=[-1, -2], keepdims=1, name="head_mean"
            ),
            helper.make_node("Reshape", ["pooled", "shape"], ["logits"], name="head_reshape"),
        ]
        inits.append(numpy_helper.from_array(np.array([-1, N_CLASSES], np.int64), "shape"))
    else:
        raise ValueError(pool)
    W = Wc[:, :, kernel // 2, kernel // 2].astype(np.float64)
    return BuiltConvHead(_model(nodes, inits), W, bc.astype(np.float64), w1, b1)


CONV_HEADS = {
    "conv1x1_gap_flatten": lambda seed=0: conv_head(seed, pool="gap"),
    "conv1x1_reducemean": lambda seed=0: conv_head(seed, pool="mean"),
    "conv1x1_reducemean_reshape": lambda seed=0: conv_head(seed, pool="mean_reshape"),
}


def gemm_div_by_logits(seed: int = 0) -> bytes:
    """``1 / Gemm(h, W, b)``: a constant divided by the logits is not affine."""
    nodes, inits, _, _ = _extractor(seed)
    W, b = _head_weights(seed)
    nodes += [
        helper.make_node("Gemm", ["h", "W", "b"], ["z"], transB=1, name="head"),
        helper.make_node("Div", ["one", "z"], ["logits"], name="reciprocal"),
    ]
    inits += [
        numpy_helper.from_array(W, "W"),
        numpy_helper.from_array(b, "b"),
        numpy_helper.from_array(np.array(1.0, np.float32), "one"),
    ]
    return _model(nodes, inits)
