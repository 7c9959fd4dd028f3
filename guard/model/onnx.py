"""ONNX adapter: one onnxruntime run gives the logits *and* the last hidden layer's features.

Any ONNX classifier whose logits come from a final affine layer works (paper eq. 4):

* ``Gemm(features, B, C)`` (``transA = 0``; ``transB``, ``alpha`` and ``beta`` honoured), or
* ``MatMul(features, B)`` optionally followed by ``Add(., C)``,

optionally followed by ``Softmax`` / ``LogSoftmax`` (dropped: they do not change the order of the
classes). ``W`` (n x f) and ``b`` (n,) are read from the initializers and the layer's input is
added as an extra graph output, so a single run yields both tensors. Anything else is refused with
a :class:`~guard.errors.ModelError` that names the last node.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

from ..errors import InputError, ModelError
from ..geometry.progress import progress_bar

_SOFTMAX_OPS = {"Softmax", "LogSoftmax"}
_PASS_THROUGH = {"Identity"}


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def available_providers() -> list[str]:
    """onnxruntime providers to use: CUDA when this onnxruntime build has it, then CPU."""
    have = ort.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in have]


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


def _describe(node: onnx.NodeProto | None, tensor: str) -> str:
    if node is None:
        return f"'{tensor}' is a graph input, not computed by a layer"
    return f"last node is {node.op_type} '{node.name or '(unnamed)'}' producing '{tensor}'"


def split_affine_head(model: onnx.ModelProto) -> tuple[str, str, np.ndarray, np.ndarray]:
    """Find the final affine layer of a classifier.

    Returns:
        (logits_name, features_name, W (n, f) float64, b (n,) float64).

    Raises:
        ModelError: if the logits are not an affine function of one tensor with constant weights.
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
        node = g.producer.get(logits)
    refuse = (
        "the model does not end in an affine layer (Gemm, or MatMul + Add, optionally followed "
        "by Softmax): {}"
    )
    if node is None:
        raise ModelError(refuse.format(_describe(node, logits)))
    bias: np.ndarray | None = None
    if node.op_type == "Gemm":
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        B = g.constant(node.input[1])
        if attrs.get("transA", 0) != 0 or B is None:
            raise ModelError(refuse.format(_describe(node, logits) + " (non-constant weights)"))
        B = B.astype(np.float64) * float(attrs.get("alpha", 1.0))
        W = B if attrs.get("transB", 0) else B.T
        if len(node.input) > 2 and node.input[2]:
            C = g.constant(node.input[2])
            if C is None:
                raise ModelError(refuse.format(_describe(node, logits) + " (non-constant bias)"))
            bias = C.astype(np.float64) * float(attrs.get("beta", 1.0))
        features = node.input[0]
    else:
        if node.op_type == "Add":
            consts = [g.constant(i) for i in node.input]
            k = next((i for i, c in enumerate(consts) if c is not None), None)
            if k is None:
                raise ModelError(refuse.format(_describe(node, logits) + " (no constant bias)"))
            bias = np.asarray(consts[k], dtype=np.float64)
            inner = g.skip_identity(node.input[1 - k])
            node = g.producer.get(inner)
            if node is None or node.op_type != "MatMul":
                raise ModelError(refuse.format(_describe(node, inner) + " before the final Add"))
        if node.op_type != "MatMul":
            raise ModelError(refuse.format(_describe(node, logits)))
        B = g.constant(node.input[1])
        if B is None or B.ndim != 2:
            raise ModelError(refuse.format(_describe(node, logits) + " (non-constant weights)"))
        W = B.astype(np.float64).T
        features = node.input[0]
    n = W.shape[0]
    if bias is not None and bias.size not in (1, n):
        raise ModelError(f"final bias has {bias.size} values for {n} classes")
    b = np.zeros(n) if bias is None else np.broadcast_to(bias.reshape(-1), (n,)).copy()
    return logits, features, np.ascontiguousarray(W), b


class OnnxClassifier:
    """An ONNX classifier run through onnxruntime with its penultimate features exposed.

    Args:
        model: path to a ``.onnx`` file or its bytes.
        providers: onnxruntime execution providers; default :func:`available_providers`.

    Attributes:
        sha256: hex digest of the original model bytes.
        W: (n_classes, n_features) float64 final-layer weights; b: (n_classes,) biases.
        input_name, input_shape: the model's input (``None`` for a dynamic dimension).
    """

    def __init__(self, model: str | Path | bytes, providers: list[str] | None = None) -> None:
        if isinstance(model, (str, Path)):
            path = Path(model)
            if not path.is_file():
                raise InputError(f"model file not found: {path}")
            data = path.read_bytes()
        else:
            data = bytes(model)
        try:
            proto = onnx.load_from_string(data)
        except Exception as exc:  # noqa: BLE001 - onnx raises several unrelated types
            raise ModelError(f"cannot parse the ONNX model: {exc}") from None
        self.data = data
        self.sha256 = sha256_bytes(data)
        self.logits_name, self.features_name, self.W, self.b = split_affine_head(proto)
        inits = {t.name for t in proto.graph.initializer}
        inputs = [i for i in proto.graph.input if i.name not in inits]
        if len(inputs) != 1:
            raise ModelError(f"expected a model with one input, got {[i.name for i in inputs]}")
        self.input_name = inputs[0].name
        dims = inputs[0].type.tensor_type.shape.dim
        self.input_shape = tuple(d.dim_value if d.HasField("dim_value") else None for d in dims)
        elem = inputs[0].type.tensor_type.elem_type
        if elem not in (onnx.TensorProto.FLOAT, onnx.TensorProto.UNDEFINED):
            raise ModelError(
                f"expected a float32 model input, got {onnx.TensorProto.DataType.Name(elem)}"
            )
        known = {o.name for o in proto.graph.output}
        for name in (self.logits_name, self.features_name):
            if name not in known:
                proto.graph.output.append(onnx.helper.make_tensor_value_info(name, elem or 1, None))
        self.providers = providers or available_providers()
        try:
            self.session = ort.InferenceSession(proto.SerializeToString(), providers=self.providers)
        except Exception as exc:  # noqa: BLE001
            raise ModelError(f"onnxruntime cannot load the model: {exc}") from None

    @property
    def n_classes(self) -> int:
        return int(self.W.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.W.shape[1])

    def prepare(self, x: np.ndarray) -> np.ndarray:
        """Validate a batch against the model's input and return it as float32.

        uint8 arrays are images in 0..255 and are scaled by 1/255.
        """
        x = np.asarray(x)
        if x.dtype == np.uint8:
            x = x.astype(np.float32) / 255.0
        elif x.dtype.kind == "f":
            x = x.astype(np.float32, copy=False)
        else:
            raise InputError(f"expected float32 (or uint8 image) input, got dtype {x.dtype}")
        shape = ("N",) + tuple("?" if d is None else d for d in self.input_shape[1:])
        if x.ndim != len(self.input_shape) or any(
            d is not None and d != s for d, s in zip(self.input_shape[1:], x.shape[1:])
        ):
            raise InputError(f"expected input of shape {shape}, got {x.shape}")
        if x.shape[0] == 0:
            raise InputError(f"expected at least one input of shape {shape}, got an empty batch")
        if not np.all(np.isfinite(x)):
            raise InputError("input contains NaN or Inf")
        return np.ascontiguousarray(x)

    def run(
        self, x: np.ndarray, *, batch_size: int = 256, progress: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        """Logits (N, n) and features (N, f), float32, from one model run per batch."""
        x = self.prepare(x)
        if self.input_shape and self.input_shape[0] is not None:  # exported with a fixed batch
            batch_size = self.input_shape[0]
            if len(x) % batch_size:
                raise InputError(
                    f"this model takes batches of exactly {batch_size} inputs; "
                    f"got {len(x)}, not a multiple of {batch_size}"
                )
        logits, feats = [], []
        with progress_bar(len(x), "model", enabled=progress) as bar:
            for lo in range(0, len(x), batch_size):
                z, phi = self.session.run(
                    [self.logits_name, self.features_name],
                    {self.input_name: x[lo : lo + batch_size]},
                )
                if phi.ndim != 2 or phi.shape[1] != self.n_features:
                    raise ModelError(
                        f"features '{self.features_name}' have shape {phi.shape}, expected "
                        f"(batch, {self.n_features})"
                    )
                logits.append(z.reshape(len(phi), -1))
                feats.append(phi)
                bar.update(len(phi))
        return (
            np.concatenate(logits).astype(np.float32, copy=False),
            np.concatenate(feats).astype(np.float32, copy=False),
        )

    def check_affine(self, logits: np.ndarray, features: np.ndarray, rtol: float = 1e-4) -> float:
        """Verify ``logits == features W^T + b`` to ``rtol`` relative; return the error."""
        recon = features.astype(np.float64) @ self.W.T + self.b
        err = float(np.abs(recon - logits).max() / max(1.0, float(np.abs(logits).max())))
        if not err <= rtol:
            raise ModelError(
                f"logits differ from features @ W^T + b by {err:.2e} (relative, allowed "
                f"{rtol:.0e}):"
                f" the layer read as final affine layer does not produce the logits"
            )
        return err
