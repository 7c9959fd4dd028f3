"""ONNX adapter: one onnxruntime run gives the logits *and* the last hidden layer's features.

Any ONNX classifier whose logits come from a final affine layer works (paper eq. 4); how the
layer is found, and which heads are read as affine, is :mod:`.head`'s business. The features
tensor (the layer's input) is added as an extra graph output, so a single run yields both.

Weights stored as external data beside the ``.onnx`` file are read from the model file's own
directory and embedded (:mod:`.external`): :attr:`OnnxClassifier.data` is always one
self-contained model, and its sha256 covers every weight. A model exported with a fixed batch size
runs on any number of inputs, in chunks of that size.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from ..errors import InputError, ModelError
from ..geometry.progress import progress_bar
from .external import embed_external_data
from .head import AffineHead, find_affine_head, split_affine_head

__all__ = [
    "OnnxClassifier",
    "add_head_outputs",
    "available_providers",
    "sha256_bytes",
    "split_affine_head",
]


#: protobuf's limit on one serialized message: a model with external data must fit in it.
_MAX_PROTOBUF = 2**31


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def available_providers() -> list[str]:
    """onnxruntime providers to use: CUDA when this onnxruntime build has it, then CPU."""
    have = ort.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in have]


def _self_contained(proto: onnx.ModelProto, path: Path | None, raw: bytes) -> bytes:
    """The model's bytes with every external tensor embedded (``raw`` when there is none)."""
    if not embed_external_data(proto, path):
        return raw
    size = proto.ByteSize()
    if size >= _MAX_PROTOBUF:
        raise ModelError(
            f"the model {path} with its external data has {size / 2**30:.1f} GiB, more than "
            f"one ONNX protobuf can hold (2 GiB); guard stores and hashes the model as one file"
        )
    return proto.SerializeToString()


def add_head_outputs(proto: onnx.ModelProto, head: AffineHead, elem: int) -> None:
    """The graph surgery that exposes the head (in place): append the nodes that compute the
    features (a convolution head's spatial mean) and make the logits and the features tensors
    graph outputs of element type ``elem``. ``fit`` runs this graph; ``guard export triton``
    ships it (:mod:`.triton`)."""
    proto.graph.node.extend(head.feature_nodes)
    known = {o.name for o in proto.graph.output}
    for name in (head.logits, head.features):
        if name not in known:
            proto.graph.output.append(onnx.helper.make_tensor_value_info(name, elem, None))


def _session_options() -> ort.SessionOptions:
    """onnxruntime's options for the guarded model: its intra-op threads sleep when a run ends
    instead of spin-waiting for the next one. The guard computes the geometry on the same cores
    right after every model run, and spinning threads took half of them: served on 2 cores
    (1 image per request, 16 in flight, the default artifact) guard-on throughput rose 1.7x
    (75 -> 130 images/s) and guard-off 1.4x (470 -> 665) with spinning off."""
    opts = ort.SessionOptions()
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return opts


class OnnxClassifier:
    """An ONNX classifier run through onnxruntime with its penultimate features exposed.

    Args:
        model: path to a ``.onnx`` file or its bytes. External data (weights in files beside
            the ``.onnx`` file) is read relative to the model file, never the working
            directory, and must lie inside the model's directory; a model given as bytes must
            be self-contained.
        providers: onnxruntime execution providers; default :func:`available_providers`.

    Attributes:
        data: the self-contained model: the file's bytes, or, for a model with external data,
            the model with every tensor embedded (what an artifact stores as ``model.onnx``).
        sha256: hex digest of ``data`` (so it covers the external weights too).
        W: (n_classes, n_features) float64 final-layer weights; b: (n_classes,) biases, with
            constant affine operations after the last layer folded in (:mod:`.head`).
        head: the head as found (:class:`~.head.AffineHead`), for messages.
        input_name, input_shape: the model's input (``None`` for a dynamic dimension; a fixed
            batch size is honoured by :meth:`run`).
    """

    def __init__(self, model: str | Path | bytes, providers: list[str] | None = None) -> None:
        path: Path | None = None
        if isinstance(model, (str, Path)):
            path = Path(model)
            if not path.is_file():
                raise InputError(f"model file not found: {path}")
            raw = path.read_bytes()
        else:
            raw = bytes(model)
        try:
            proto = onnx.load_from_string(raw)
        except Exception as exc:  # noqa: BLE001 - onnx raises several unrelated types
            raise ModelError(f"cannot parse the ONNX model: {exc}") from None
        self.data = _self_contained(proto, path, raw)
        self.sha256 = sha256_bytes(self.data)
        self.head = find_affine_head(proto)
        self.logits_name, self.features_name = self.head.logits, self.head.features
        self.W, self.b = self.head.W, self.head.b
        inits = {t.name for t in proto.graph.initializer}
        inputs = [i for i in proto.graph.input if i.name not in inits]
        if len(inputs) != 1:
            raise ModelError(f"expected a model with one input, got {[i.name for i in inputs]}")
        self.input_name = inputs[0].name
        dims = inputs[0].type.tensor_type.shape.dim
        self.input_shape = tuple(
            d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in dims
        )
        elem = inputs[0].type.tensor_type.elem_type
        if elem not in (onnx.TensorProto.FLOAT, onnx.TensorProto.UNDEFINED):
            raise ModelError(
                f"expected a float32 model input, got {onnx.TensorProto.DataType.Name(elem)}"
            )
        add_head_outputs(proto, self.head, elem or onnx.TensorProto.FLOAT)
        self.providers = providers or available_providers()
        try:
            self.session = ort.InferenceSession(
                proto.SerializeToString(), sess_options=_session_options(), providers=self.providers
            )
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

    @property
    def fixed_batch(self) -> int | None:
        """The batch size the model was exported with, or ``None`` for a dynamic batch."""
        return self.input_shape[0] if self.input_shape else None

    def run(
        self, x: np.ndarray, *, batch_size: int = 256, progress: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        """Logits (N, n) and features (N, f), float32, from one model run per batch.

        A model with a fixed batch size runs in chunks of exactly that size (``batch_size`` is
        then ignored): the last chunk is padded with copies of its last input, and the
        padding's outputs are dropped.
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)):
            raise InputError(f"batch_size must be a positive integer, got {batch_size!r}")
        if batch_size < 1:
            raise InputError(f"batch_size must be a positive integer, got {batch_size}")
        x = self.prepare(x)
        fixed = self.fixed_batch
        step = fixed or int(batch_size)
        logits, feats = [], []
        with progress_bar(len(x), "model", enabled=progress) as bar:
            for lo in range(0, len(x), step):
                chunk = x[lo : lo + step]
                k = len(chunk)
                if fixed is not None and k < fixed:
                    chunk = np.concatenate([chunk, np.repeat(chunk[-1:], fixed - k, axis=0)])
                z, phi = self.session.run(
                    [self.logits_name, self.features_name], {self.input_name: chunk}
                )
                if phi.ndim != 2 or phi.shape[1] != self.n_features or len(phi) != len(chunk):
                    raise ModelError(
                        f"features '{self.features_name}' have shape {phi.shape}, expected "
                        f"({len(chunk)}, {self.n_features})"
                    )
                logits.append(z.reshape(len(phi), -1)[:k])
                feats.append(phi[:k])
                bar.update(k)
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
