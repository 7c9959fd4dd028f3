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
