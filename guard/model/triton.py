"""Export for a model server: a Triton model repository entry that serves the guarded model with
its penultimate features as a second output, so that ``guard serve --upstream`` can wrap it.

``REPO/NAME/1/model.onnx`` is the classifier after the same graph surgery ``fit`` runs
(:func:`.onnx.add_head_outputs`: the features tensor, and the logits when a Softmax follows them,
become graph outputs), with the features renamed ``features`` (an ``Identity``), a dynamic batch
axis on the input and every output, and the output shapes written into the graph.
``REPO/NAME/config.pbtxt`` is its ``ModelConfig`` in protobuf text format:
``platform: "onnxruntime_onnx"``, ``max_batch_size``, dynamic batching, and every input and
output with the name, data type and per-image dims the graph has. The model server needs nothing
else; any server of the Open Inference Protocol that runs ONNX (KServe, MLServer) serves the same
file.

Before anything is written, the exported graph is run on the check inputs (the artifact's
reference inputs) and must reproduce the classifier's own logits and features exactly as
onnxruntime computes them here, at two batch sizes (the batch axis really is dynamic).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from ..atomic import atomic_directory
from ..errors import InputError, ModelError
from .onnx import OnnxClassifier, add_head_outputs

__all__ = [
    "FEATURES",
    "LOGITS",
    "TritonExport",
    "export_triton",
    "served_outputs",
    "triton_config",
    "triton_graph",
]

#: Preferred names of the two outputs the proxy asks for.
LOGITS = "logits"
FEATURES = "features"
#: The batch axis's symbolic name in the exported graph.
BATCH = "batch"
#: ``TYPE_*`` of Triton's ModelConfig for the ONNX element types an export can carry.
TRITON_TYPES: dict[int, str] = {
    onnx.TensorProto.FLOAT: "TYPE_FP32",
    onnx.TensorProto.DOUBLE: "TYPE_FP64",
    onnx.TensorProto.FLOAT16: "TYPE_FP16",
    onnx.TensorProto.INT64: "TYPE_INT64",
    onnx.TensorProto.INT32: "TYPE_INT32",
    onnx.TensorProto.BOOL: "TYPE_BOOL",
    onnx.TensorProto.UINT8: "TYPE_UINT8",
}
_NUMPY_TO_ONNX: dict[np.dtype, int] = {
    np.dtype(np.float32): onnx.TensorProto.FLOAT,
    np.dtype(np.float64): onnx.TensorProto.DOUBLE,
    np.dtype(np.float16): onnx.TensorProto.FLOAT16,
    np.dtype(np.int64): onnx.TensorProto.INT64,
    np.dtype(np.int32): onnx.TensorProto.INT32,
    np.dtype(np.bool_): onnx.TensorProto.BOOL,
    np.dtype(np.uint8): onnx.TensorProto.UINT8,
}


@dataclass(frozen=True)
class Tensor:
    """One input or output of the exported model: per-image ``dims`` (-1 = variable)."""

    name: str
    elem_type: int
    dims: tuple[int, ...]

    @property
    def triton_type(self) -> str:
        return TRITON_TYPES[self.elem_type]


@dataclass(frozen=True)
class TritonExport:
    """What :func:`export_triton` wrote: ``directory`` = ``REPO/NAME`` with ``config.pbtxt`` and
    ``1/model.onnx``; the proxy asks for outputs ``logits`` and ``features``."""

    directory: Path
    name: str
    input: Tensor
    outputs: tuple[Tensor, ...]
    logits: str
    features: str
    max_batch_size: int

    @property
    def config(self) -> Path:
        return self.directory / "config.pbtxt"

    @property
    def model(self) -> Path:
        return self.directory / "1" / "model.onnx"


def _tensor_names(graph: onnx.GraphProto) -> set[str]:
    names = {i.name for i in graph.input} | {o.name for o in graph.output}
    names |= {t.name for t in graph.initializer}
    return names | {o for n in graph.node for o in n.output}


def _free_name(preferred: str, taken: set[str]) -> str:
    """``preferred``, else ``guard_preferred``, ``guard_preferred_1``, ...: the first not taken."""
    candidates = [preferred, f"guard_{preferred}"]
    candidates += [f"guard_{preferred}_{i}" for i in range(1, len(taken) + 2)]
    return next(c for c in candidates if c not in taken)


def served_outputs(model: OnnxClassifier) -> tuple[str, str]:
    """The names the exported model gives the logits and the features: the model's own logits
    output when it has one (no Softmax after them), else ``logits``; ``features`` (with a
    ``guard_`` prefix when the graph already uses the name)."""
    graph = onnx.load_from_string(model.data).graph
    taken = _tensor_names(graph)
    outputs = {o.name for o in graph.output}
    logits = model.logits_name if model.logits_name in outputs else _free_name(LOGITS, taken)
    features = _free_name(FEATURES, taken | {logits})
    return logits, features


def _set_dims(value: onnx.ValueInfoProto, elem: int, dims: tuple[int, ...]) -> None:
    """``value``'s type: ``elem`` of shape ``[batch, *dims]`` (-1 = a symbolic dim)."""
    shape = [BATCH] + [d if d >= 0 else f"{value.name}_{i}" for i, d in enumerate(dims, 1)]
    value.CopyFrom(onnx.helper.make_tensor_value_info(value.name, elem, shape))


def triton_graph(model: OnnxClassifier) -> onnx.ModelProto:
    """The model as exported: head outputs exposed under :func:`served_outputs`' names, batch
    axis dynamic. Output shapes are set by :func:`export_triton` once it has run the graph."""
    proto = onnx.load_from_string(model.data)
    graph = proto.graph
    logits, features = served_outputs(model)
    add_head_outputs(proto, model.head, onnx.TensorProto.FLOAT)
    node_names = {n.name for n in graph.node}
    for internal, public in ((model.logits_name, logits), (model.features_name, features)):
        if internal != public:
            node_name = _free_name(f"export_{public}", node_names)
            node_names.add(node_name)
            graph.node.append(
                onnx.helper.make_node("Identity", [internal], [public], name=node_name)
            )
            out = next(o for o in graph.output if o.name == internal)
            out.name = public
    (inp,) = [i for i in graph.input if i.name == model.input_name]
    dims = inp.type.tensor_type.shape.dim
    if not dims:
        raise ModelError(f"the model's input {model.input_name!r} has no shape: cannot export it")
    if model.fixed_batch is not None:
        # a fixed batch size may be baked into intermediate shapes: dropped, checked by running
        del graph.value_info[:]
    dims[0].Clear()
    dims[0].dim_param = BATCH
    return proto


def _run(session: ort.InferenceSession, model: OnnxClassifier, x: np.ndarray) -> list[np.ndarray]:
    try:
        return list(session.run(None, {model.input_name: x}))
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own types
        fixed = (
            f" (it was exported with a fixed batch size of {model.fixed_batch}: export it again "
            f"with a dynamic batch axis)"
            if model.fixed_batch is not None
            else ""
        )
        raise ModelError(
            f"the exported model fails on a batch of {len(x)} inputs{fixed}: {exc}"
        ) from None


def _checked_outputs(
    proto: onnx.ModelProto, model: OnnxClassifier, x: np.ndarray, names: tuple[str, str]
) -> tuple[Tensor, ...]:
    """Run the exported graph on ``x`` as one batch and on its first input alone; the outputs'
    per-image dims and types, after checking that logits and features equal the classifier's."""
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    cpu = OnnxClassifier(model.data, providers=["CPUExecutionProvider"])
    want = cpu.run(x, batch_size=len(x))
    out_names = [o.name for o in proto.graph.output]
    got_all = _run(session, model, x)
    got_one = _run(session, model, x[:1])
    tensors = []
    for name, full, one in zip(out_names, got_all, got_one):
        full, one = np.asarray(full), np.asarray(one)
        if (
            full.ndim == 0
            or len(full) != len(x)
            or len(one) != 1
            or full.shape[1:] != one.shape[1:]
        ):
            raise ModelError(
                f"the exported model's output {name!r} has shape {full.shape} for {len(x)} "
                f"inputs and {one.shape} for one: its first axis is not the batch"
            )
        if full.dtype not in _NUMPY_TO_ONNX:
            raise ModelError(f"output {name!r} has dtype {full.dtype}, which Triton cannot serve")
        tensors.append(Tensor(name, _NUMPY_TO_ONNX[full.dtype], tuple(full.shape[1:])))
    by_name = dict(zip(out_names, got_all))
    for what, name, expected in (("logits", names[0], want[0]), ("features", names[1], want[1])):
        got = np.asarray(by_name[name]).reshape(expected.shape)
        err = float(np.abs(got - expected).max())
        if not err <= 1e-5 * max(1.0, float(np.abs(expected).max())):
            raise ModelError(
                f"the exported model's {what} differ from the classifier's by {err:.2e}"
            )
    return tuple(tensors)


def triton_config(
    name: str, inp: Tensor, outputs: tuple[Tensor, ...], max_batch_size: int, delay_us: int
) -> str:
    """``config.pbtxt``: Triton's ModelConfig in protobuf text format."""

    def entry(t: Tensor) -> str:
        dims = ", ".join(str(d) for d in t.dims)
        return (
            f'  {{\n    name: "{t.name}"\n    data_type: {t.triton_type}\n'
            f"    dims: [ {dims} ]\n  }}"
        )

    joined = ",\n".join(entry(o) for o in outputs)
    return (
        f"# Written by `guard export triton`: the guarded classifier with its penultimate\n"
        f"# features as an extra output, for `guard serve --upstream`.\n"
        f'name: "{name}"\n'
        f'platform: "onnxruntime_onnx"\n'
        f"max_batch_size: {max_batch_size}\n"
        f"input [\n{entry(inp)}\n]\n"
        f"output [\n{joined}\n]\n"
        f"dynamic_batching {{\n  max_queue_delay_microseconds: {delay_us}\n}}\n"
    )


def _check_name(name: str) -> str:
    if not name or name in (".", "..") or "/" in name or os.sep in name or '"' in name:
        raise InputError(f"expected a model name without '/' or quotes, got {name!r}")
    return name


def export_triton(
    model: OnnxClassifier,
    repo: str | Path,
    name: str,
    check_inputs: np.ndarray,
    *,
    max_batch_size: int = 64,
    max_queue_delay_us: int = 0,
    overwrite: bool = False,
) -> TritonExport:
    """Write ``repo/name/config.pbtxt`` and ``repo/name/1/model.onnx`` (atomically: a
    temporary directory renamed at the end); see the module docstring.

    Args:
        model: the guarded classifier (e.g. ``load_artifact(...).model_``).
        repo: the model repository (created if missing).
        name: the model's name in the repository.
        check_inputs: (R, ...) float32 inputs the exported graph must reproduce the classifier's
            logits and features on (the artifact's reference inputs).
        max_batch_size: Triton's ``max_batch_size`` (largest batch its dynamic batcher forms).
        max_queue_delay_us: Triton's dynamic batching delay.
        overwrite: replace an existing ``repo/name``.

    Raises:
        InputError: bad name or sizes, or ``repo/name`` exists without ``overwrite``.
        ModelError: the exported graph does not run at two batch sizes or does not reproduce
            the classifier.
    """
    _check_name(name)
    if max_batch_size < 1 or max_queue_delay_us < 0:
        raise InputError("max_batch_size must be >= 1 and max_queue_delay_us >= 0")
    x = model.prepare(check_inputs)
    out = Path(repo) / name
    if out.exists() and not overwrite:
        raise InputError(f"{out} already exists (pass --overwrite to replace it)")
    proto = triton_graph(model)
    logits, features = served_outputs(model)
    outputs = _checked_outputs(proto, model, x, (logits, features))
    for value, t in zip(proto.graph.output, outputs):
        _set_dims(value, t.elem_type, tuple(-1 if d < 0 else d for d in t.dims))
    (inp,) = [i for i in proto.graph.input if i.name == model.input_name]
    in_dims = tuple(-1 if d is None else int(d) for d in model.input_shape[1:])
    input_tensor = Tensor(model.input_name, onnx.TensorProto.FLOAT, in_dims)
    _set_dims(inp, onnx.TensorProto.FLOAT, in_dims)
    try:
        onnx.checker.check_model(proto)
    except Exception as exc:  # noqa: BLE001 - the checker raises several types
        raise ModelError(f"the exported model fails onnx.checker: {exc}") from None
    _checked_outputs(proto, model, x, (logits, features))  # the shapes written agree too
    config = triton_config(name, input_tensor, outputs, max_batch_size, max_queue_delay_us)
    with atomic_directory(out) as tmp:
        (tmp / "1").mkdir()
        (tmp / "1" / "model.onnx").write_bytes(proto.SerializeToString())
        (tmp / "config.pbtxt").write_text(config)
    return TritonExport(out, name, input_tensor, outputs, logits, features, max_batch_size)
