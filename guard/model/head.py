"""Find the final affine layer of an ONNX classifier: ``logits = features W^T + b`` (paper eq. 4).

The head is read backwards from the (single) output:

1. an optional ``Softmax`` / ``LogSoftmax`` is dropped (it does not change the order of the
   classes);
2. constant affine operations on the logits are folded into ``W, b``: ``Add`` / ``Sub`` of a
   constant, ``Mul`` by a constant, ``Div`` by a constant (temperature), ``Neg``, and
   ``BatchNormalization`` in inference mode; each constant is a scalar or one value per class;
3. the linear core, whose input is the features:

   * ``Gemm(features, B, C)`` (``transA = 0``; ``transB``, ``alpha`` and ``beta`` honoured), or
     ``MatMul(features, B)`` with constant ``B`` (a bias comes from a following ``Add``);
   * a 1x1 convolution (stride 1, no padding, one group) followed by a global mean over space
     (``GlobalAveragePool`` + ``Flatten`` / ``Reshape`` / ``Squeeze``, or ``ReduceMean`` over
     the spatial axes). The mean commutes with the convolution, so the features are the
     convolution's input averaged over space: :class:`AffineHead` then carries the nodes that
     compute them (``GlobalAveragePool`` + ``Flatten``).

Anything else is refused with a :class:`~guard.errors.ModelError` that names the node. The fit
checks the result numerically (``OnnxClassifier.check_affine``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..errors import ModelError

__all__ = ["AffineHead", "find_affine_head", "split_affine_head"]

_SOFTMAX_OPS = {"Softmax", "LogSoftmax"}
_PASS_THROUGH = {"Identity"}
SUPPORTED = (
    "Gemm or MatMul, or a 1x1 Conv + global mean (GlobalAveragePool + Flatten, or ReduceMean), "
    "optionally followed by Add/Sub/Mul/Div by constants, BatchNormalization and Softmax"
)
_REFUSE = "the model does not end in an affine layer (" + SUPPORTED + "): {}"


@dataclass(frozen=True)
class AffineHead:
    """The final affine layer of a classifier.

    Attributes:
        logits: name of the tensor that holds the logits (before a final Softmax).
        features: name of the features tensor ``(N, f)``; computed by ``feature_nodes`` when
            these are not empty (a convolution head), else a tensor of the graph.
        W: (n, f) float64 weights and b: (n,) float64 biases, all constant operations folded.
        feature_nodes: nodes to append to the graph to compute ``features``.
        description: the head's nodes, e.g. ``"Gemm 'fc' + Div 'temperature'"``.
    """

    logits: str
    features: str
    W: np.ndarray
    b: np.ndarray
    feature_nodes: tuple[onnx.NodeProto, ...] = ()
    description: str = ""


class _Graph:
    """Name lookups over an ONNX graph."""

    def __init__(self, graph: onnx.GraphProto) -> None:
        self.graph = graph
        self.producer = {o: n for n in graph.node for o in n.output}
        self.inits = {t.name: t for t in graph.initializer}

    def constant(self, name: str) -> np.ndarray | None:
        """Value of a tensor that is an initializer or a Constant (through Identity nodes)."""
        if name in self.inits:
            return numpy_helper.to_array(self.inits[name])
        node = self.producer.get(name)
        if node is None:
            return None
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    return numpy_helper.to_array(a.t)
            return None
        if node.op_type in _PASS_THROUGH:
            return self.constant(node.input[0])
        return None

    def skip_identity(self, name: str) -> str:
        node = self.producer.get(name)
        while node is not None and node.op_type in _PASS_THROUGH:
            name = node.input[0]
            node = self.producer.get(name)
        return name

    def unused_name(self, base: str) -> str:
        taken = {o for n in self.graph.node for o in n.output}
        taken |= {i.name for i in self.graph.input} | set(self.inits)
        name, k = base, 1
        while name in taken:
            name, k = f"{base}_{k}", k + 1
        return name


def _label(node: onnx.NodeProto) -> str:
    return f"{node.op_type} '{node.name or '(unnamed)'}'"


def _describe(node: onnx.NodeProto | None, tensor: str) -> str:
    if node is None:
        return f"'{tensor}' is a graph input, not computed by a layer"
    return f"{_label(node)} produces '{tensor}'"


def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


@dataclass(frozen=True)
class _Step:
    """``y = scale * x + shift`` per class, one folded node; ``scale`` / ``shift`` as given by
    the graph (scalars or per-class vectors, checked against n once n is known)."""

    node: onnx.NodeProto
    scale: np.ndarray
    shift: np.ndarray


def _per_class(value: np.ndarray, n: int, node: onnx.NodeProto) -> np.ndarray:
    """A constant as one float64 value per class: a scalar, or shape (n,) / (1, n)."""
    v = np.asarray(value, dtype=np.float64)
    if v.ndim <= 2 and (v.size == 1 or (v.shape[-1] == n and v.size == n)):
        return np.broadcast_to(v.reshape(-1), (n,)).copy()
    raise ModelError(
        _REFUSE.format(
            f"{_label(node)} uses a constant of shape {v.shape}, not one value per class "
            f"(a scalar, ({n},) or (1, {n}))"
        )
    )


def _affine_step(g: _Graph, node: onnx.NodeProto, tensor: str) -> tuple[_Step, str]:
    """The affine operation ``node`` (producing ``tensor``) and its non-constant input."""
    op, one, zero = node.op_type, np.ones(()), np.zeros(())
    if op == "Neg":
        return _Step(node, -one, zero), node.input[0]
    if op == "BatchNormalization":
        a = _attrs(node)
        consts = [g.constant(i) for i in node.input[1:5]]
        if a.get("training_mode", 0) or len(node.input) < 5 or any(c is None for c in consts):
            raise ModelError(
                _REFUSE.format(
                    _describe(node, tensor) + " (not in inference mode with constant statistics)"
                )
            )
        gamma, beta, mean, var = (np.asarray(c, dtype=np.float64) for c in consts)
        scale = gamma / np.sqrt(var + float(a.get("epsilon", 1e-5)))
        return _Step(node, scale, beta - scale * mean), node.input[0]
    if op in ("Add", "Sub", "Mul", "Div") and len(node.input) == 2:
        consts = [g.constant(i) for i in node.input]
        if (consts[0] is None) == (consts[1] is None):
            what = "two constants" if consts[0] is not None else "no constant operand"
            raise ModelError(_REFUSE.format(_describe(node, tensor) + f" ({what})"))
        k = 0 if consts[0] is not None else 1
        c, inner = np.asarray(consts[k], dtype=np.float64), node.input[1 - k]
        if op == "Add":
            return _Step(node, one, c), inner
        if op == "Sub":  # x - c, or c - x
            return (_Step(node, one, -c) if k == 1 else _Step(node, -one, c)), inner
        if op == "Mul":
            return _Step(node, c, zero), inner
        if k == 1:  # Div: x / c
            if not np.all(np.isfinite(c)) or np.any(c == 0):
                raise ModelError(_REFUSE.format(_describe(node, tensor) + " (divides by zero)"))
            return _Step(node, 1.0 / c, zero), inner
        raise ModelError(
            _REFUSE.format(_describe(node, tensor) + " (a constant divided by the logits)")
        )
    raise ModelError(_REFUSE.format(_describe(node, tensor)))


def _gemm(g: _Graph, node: onnx.NodeProto, tensor: str) -> tuple[np.ndarray, np.ndarray]:
    a = _attrs(node)
    B = g.constant(node.input[1])
    if a.get("transA", 0) != 0 or B is None or B.ndim != 2:
        raise ModelError(_REFUSE.format(_describe(node, tensor) + " (non-constant weights)"))
    B = B.astype(np.float64) * float(a.get("alpha", 1.0))
    W = B if a.get("transB", 0) else B.T
    b = np.zeros(W.shape[0])
    if len(node.input) > 2 and node.input[2]:
        C = g.constant(node.input[2])
        if C is None:
            raise ModelError(_REFUSE.format(_describe(node, tensor) + " (non-constant bias)"))
        b = _per_class(C, W.shape[0], node) * float(a.get("beta", 1.0))
    return W, b


def _matmul(g: _Graph, node: onnx.NodeProto, tensor: str) -> tuple[np.ndarray, np.ndarray]:
    B = g.constant(node.input[1])
    if B is None or B.ndim != 2:
        raise ModelError(_REFUSE.format(_describe(node, tensor) + " (non-constant weights)"))
    return B.astype(np.float64).T, np.zeros(B.shape[1])


_POOL_OPS = {"GlobalAveragePool", "ReduceMean"}
_FLATTEN_OPS = {"Flatten", "Reshape", "Squeeze"}


def _axes(g: _Graph, node: onnx.NodeProto) -> list[int] | None:
    """Axes of ReduceMean / Squeeze: the attribute (older opsets) or the second input."""
    a = _attrs(node)
    if "axes" in a:
        return [int(v) for v in a["axes"]]
    if len(node.input) > 1 and node.input[1]:
        c = g.constant(node.input[1])
        return None if c is None else [int(v) for v in np.asarray(c).reshape(-1)]
    return None


def _conv_mean_head(g: _Graph, node: onnx.NodeProto, tensor: str) -> AffineHead:
    """A 1x1 Conv + global mean over space (+ Flatten/Reshape/Squeeze), ending at ``node``."""
    chain = [node]
    flatten, pool = None, node
    if node.op_type in _FLATTEN_OPS:
        flatten = node
        found = g.producer.get(g.skip_identity(node.input[0]))
        if found is None or found.op_type not in _POOL_OPS:
            raise ModelError(_REFUSE.format(_describe(node, tensor)))
        pool = found
        chain.insert(0, pool)
    keepdims = int(_attrs(pool).get("keepdims", 1)) if pool.op_type == "ReduceMean" else 1
    if bool(keepdims) != (flatten is not None):
        raise ModelError(_REFUSE.format(_describe(node, tensor)))
    conv = g.producer.get(g.skip_identity(pool.input[0]))
    if conv is None or conv.op_type != "Conv":
        raise ModelError(_REFUSE.format(_describe(node, tensor)))
    chain.insert(0, conv)
    head = " + ".join(_label(n) for n in chain)
    Wc = g.constant(conv.input[1])
    if Wc is None or Wc.ndim < 3:
        raise ModelError(f"the head {head} has non-constant convolution weights: {SUPPORTED}")
    n, rank = Wc.shape[0], Wc.ndim
    spatial = set(range(2, rank))
    a = _attrs(conv)
    kernel = "x".join(str(k) for k in Wc.shape[2:])
    problems = []
    if any(k != 1 for k in Wc.shape[2:]):
        problems.append(f"a {kernel} kernel")
    if any(s != 1 for s in a.get("strides", [])):
        problems.append(f"strides {a['strides']}")
    if any(p != 0 for p in a.get("pads", [])):
        problems.append(f"padding {a['pads']}")
    if int(a.get("group", 1)) != 1:
        problems.append(f"{a['group']} groups")
    if pool.op_type == "ReduceMean":
        axes = _axes(g, pool)
        if axes is None or {ax % rank for ax in axes} != spatial:
            problems.append(f"a mean over axes {axes} instead of all spatial axes")
    if flatten is not None and not _flattens_to_classes(g, flatten, n, rank):
        problems.append(f"{_label(flatten)} that does not give (batch, {n})")
    if problems:
        raise ModelError(
            f"the head {head} is not affine in a feature vector guard can read "
            f"({', '.join(problems)}): a convolution head is supported as a 1x1 convolution "
            f"(stride 1, no padding, one group) followed by a global mean over space; "
            f"otherwise end the model in {SUPPORTED}"
        )
    bias = np.zeros(n)
    if len(conv.input) > 2 and conv.input[2]:
        bc = g.constant(conv.input[2])
        if bc is None:
            raise ModelError(f"the head {head} has a non-constant convolution bias")
        bias = _per_class(bc, n, conv)
    source = conv.input[0]
    pooled, features = g.unused_name(source + "_guard_mean"), g.unused_name("guard_features")
    nodes = (
        helper.make_node("GlobalAveragePool", [source], [pooled], name=pooled),
        helper.make_node("Flatten", [pooled], [features], axis=1, name=features),
    )
    W = Wc.astype(np.float64).reshape(n, -1)
    return AffineHead(tensor, features, W, bias, nodes, head)


def _flattens_to_classes(g: _Graph, node: onnx.NodeProto, n: int, rank: int) -> bool:
    """Whether Flatten / Reshape / Squeeze turns (batch, n, 1, ...) into (batch, n)."""
    if node.op_type == "Flatten":
        return int(_attrs(node).get("axis", 1)) == 1
    if node.op_type == "Squeeze":
        axes = _axes(g, node)
        return axes is not None and {ax % rank for ax in axes} == set(range(2, rank))
    shape = g.constant(node.input[1])
    if shape is None or shape.size != 2:
        return False
    first, second = (int(v) for v in shape.reshape(-1))
    batch_ok = first == -1 or first > 0 or (first == 0 and not _attrs(node).get("allowzero", 0))
    return batch_ok and (second == n or (second == -1 and first != -1))


def find_affine_head(model: onnx.ModelProto) -> AffineHead:
    """The final affine layer of a classifier, constant affine operations folded into it.

    Raises:
        ModelError: if the logits are not an affine function of one tensor with constant
            weights that this reader recognises (the message names the node).
    """
    g = _Graph(model.graph)
    if len(model.graph.output) != 1:
        names = [o.name for o in model.graph.output]
        raise ModelError(
            f"expected a classifier with a single output (logits), got outputs {names}"
        )
    logits = g.skip_identity(model.graph.output[0].name)
    node = g.producer.get(logits)
    if node is not None and node.op_type in _SOFTMAX_OPS:
        logits = g.skip_identity(node.input[0])
    steps: list[_Step] = []
    tensor = logits
    while True:
        node = g.producer.get(tensor)
        if node is None:
            raise ModelError(_REFUSE.format(_describe(node, tensor)))
        if node.op_type in ("Gemm", "MatMul"):
            W, b = (_gemm if node.op_type == "Gemm" else _matmul)(g, node, tensor)
            head = AffineHead(logits, node.input[0], W, b, (), _label(node))
            break
        if node.op_type in _POOL_OPS | _FLATTEN_OPS:
            head = _conv_mean_head(g, node, tensor)
            break
        try:
            step, inner = _affine_step(g, node, tensor)
        except ModelError as err:
            if not steps:
                raise
            after = " + ".join(_label(s.node) for s in reversed(steps))
            raise ModelError(f"{err}, before {after}") from None
        steps.append(step)
        tensor = g.skip_identity(inner)
    W, b = head.W, head.b
    n = W.shape[0]
    for step in reversed(steps):  # innermost first
        scale = _per_class(step.scale, n, step.node)
        W, b = scale[:, None] * W, scale * b + _per_class(step.shift, n, step.node)
    description = " + ".join([head.description] + [_label(s.node) for s in reversed(steps)])
    return AffineHead(
        logits,
        head.features,
        np.ascontiguousarray(W),
        np.ascontiguousarray(b),
        head.feature_nodes,
        description,
    )


def split_affine_head(model: onnx.ModelProto) -> tuple[str, str, np.ndarray, np.ndarray]:
    """``(logits_name, features_name, W (n, f), b (n,))`` of :func:`find_affine_head`.

    For a convolution head the features tensor is computed by ``feature_nodes`` that are not
    in ``model``: use :func:`find_affine_head` to get them.
    """
    head = find_affine_head(model)
    return head.logits, head.features, head.W, head.b
