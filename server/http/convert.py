"""The only place JSON (and Triton's binary tensor extension) meets the data plane.

Open Inference Protocol REST v2 bodies -> :class:`~server.dataplane.InferenceRequest`, and
results -> bodies. The binary extension: the body is a JSON header of
``Inference-Header-Content-Length`` bytes followed by raw tensors; an input with parameter
``binary_data_size`` takes that many bytes of them, in input order. Outputs are sent raw
(``binary_data_size`` on the output, bytes after the JSON) when the output asks for it
(``parameters.binary_data``) or, for outputs that do not say, when the request sets
``parameters.binary_data_output``; otherwise as a flat JSON list of values (row-major, as
Triton sends them; NaN and infinity are written ``NaN`` / ``Infinity``, as Triton writes them).

Only what the wire format knows is checked here (the JSON's structure and types, how the binary
part splits); the values' meaning is checked by the data plane.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from guard.errors import InputError

from ..dataplane import (
    InferenceRequest,
    InferenceResponse,
    ModelMetadata,
    ModelState,
    RequestTensor,
    ServerMetadata,
    TensorMetadata,
)
from ..dataplane.decode import INPUT_DTYPES
from ..errors import echo

#: numpy dtype JSON values of an input datatype are read as before the data plane checks them
#: (UINT8 as int64 so that out-of-range values can be reported).
_JSON_DTYPES: dict[str, type] = {"FP32": np.float32, "UINT8": np.int64}


@dataclass(frozen=True)
class InferCall:
    """A parsed infer request: the data plane's request, and which outputs go back raw."""

    request: InferenceRequest
    binary_default: bool
    binary: Mapping[str, bool]

    def is_binary(self, name: str) -> bool:
        return self.binary.get(name, self.binary_default)


def split_body(body: bytes, header_length: str | None) -> tuple[Any, memoryview]:
    """The JSON document and the binary part of an infer body."""
    binary = memoryview(b"")
    if header_length is not None:
        try:
            n = int(header_length)
        except ValueError:
            raise InputError(
                f"Inference-Header-Content-Length must be an integer, got {echo(header_length)}"
            ) from None
        if not 0 <= n <= len(body):
            raise InputError(
                f"Inference-Header-Content-Length is {n}, but the body has {len(body)} bytes"
            )
        binary = memoryview(body)[n:]
        body = body[:n]
    return parse_json(body), binary


def parse_json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"the request body is not valid JSON: {exc}") from None
    except RecursionError:
        raise InputError("the request body nests JSON too deeply") from None


def _field(doc: Mapping[str, Any], key: str, kind: type, what: str) -> Any:
    """``doc[key]`` if it is a ``kind`` (booleans are no integers here), None if absent."""
    value = doc.get(key)
    if value is not None and (
        not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool)
    ):
        raise InputError(f"{what}: {key!r} must be a JSON {_JSON_NAMES[kind]}")
    return value


_JSON_NAMES: dict[type, str] = {dict: "object", list: "array", str: "string", int: "integer"}


def _object(value: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise InputError(f"{what} must be a JSON object")
    return value


def infer_request(model_name: str, version: str, doc: Any, binary: memoryview) -> InferCall:
    """A parsed infer body (``doc`` from :func:`split_body`) for ``model_name`` / ``version``."""
    doc = _object(doc, "the request body")
    params = dict(_field(doc, "parameters", dict, "request") or {})
    binary_default = params.pop("binary_data_output", False)
    if not isinstance(binary_default, bool):
        raise InputError("request: parameter 'binary_data_output' must be true or false")
    inputs_doc = _field(doc, "inputs", list, "request")
    if inputs_doc is None:
        raise InputError("request: 'inputs' is missing; send one input tensor")
    offset = 0
    inputs = []
    for i, t in enumerate(inputs_doc):
        tensor, used = _input(_object(t, f"inputs[{i}]"), i, binary[offset:])
        offset += used
        inputs.append(tensor)
    if offset != len(binary):
        raise InputError(
            f"the body carries {len(binary)} bytes of binary data, but the inputs' "
            f"binary_data_size add up to {offset}"
        )
    outputs, flags = _outputs(_field(doc, "outputs", list, "request") or [])
    req = InferenceRequest(
        model_name=model_name,
        inputs=tuple(inputs),
        outputs=outputs,
        id=_field(doc, "id", str, "request") or "",
        parameters=params,
        model_version=version,
    )
    return InferCall(req, binary_default, flags)


def _input(t: Mapping[str, Any], i: int, binary: memoryview) -> tuple[RequestTensor, int]:
    """One input tensor, and how many bytes of the binary part it took."""
    what = f"inputs[{i}]"
    name = _field(t, "name", str, what)
    datatype = _field(t, "datatype", str, what)
    shape = _field(t, "shape", list, what)
    if name is None or datatype is None or shape is None:
        raise InputError(f"{what}: 'name', 'datatype' and 'shape' are required")
    what = f"input {echo(name)}"
    if not all(isinstance(d, int) and not isinstance(d, bool) for d in shape):
        raise InputError(f"{what}: shape must be a list of integers, got {echo(shape)}")
    params = _field(t, "parameters", dict, what) or {}
    size = params.get("binary_data_size")
    if size is not None:
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise InputError(f"{what}: binary_data_size must be an integer >= 0")
        if "data" in t:
            raise InputError(
                f"{what}: both 'data' and binary_data_size are set; send the values in one of them"
            )
        if size > len(binary):
            raise InputError(
                f"{what}: binary_data_size is {size}, but only {len(binary)} bytes of binary "
                f"data are left in the body"
            )
        return RequestTensor(name, datatype, tuple(shape), bytes(binary[:size])), size
    values = _json_values(t.get("data"), datatype, what)
    return RequestTensor(name, datatype, tuple(shape), values), 0


def _json_values(data: Any, datatype: str, what: str) -> np.ndarray | None:
    """JSON ``data`` (flat or nested per the shape) as a flat array; None when absent or of a
    datatype the data plane refuses anyway (it says why)."""
    if data is None or datatype not in INPUT_DTYPES:
        return None
    if not isinstance(data, list):
        data = [data]
    try:
        arr = np.asarray(data)
    except ValueError:
        raise InputError(f"{what}: 'data' is a ragged nested list; its rows must match") from None
    if arr.size and arr.dtype.kind not in "biuf":
        raise InputError(f"{what}: 'data' must hold numbers, got {arr.dtype.kind!r} values")
    if datatype == "UINT8" and arr.size and arr.dtype.kind == "f":
        raise InputError(f"{what}: UINT8 values must be integers in 0..255")
    with np.errstate(all="ignore"):  # 1e300 as FP32 is inf, which the data plane refuses
        return arr.astype(_JSON_DTYPES[datatype]).ravel()


def _outputs(docs: list[Any]) -> tuple[tuple[str, ...], dict[str, bool]]:
    names, binary = [], {}
    for i, o in enumerate(docs):
        o = _object(o, f"outputs[{i}]")
        name = _field(o, "name", str, f"outputs[{i}]")
        if name is None:
            raise InputError(f"outputs[{i}]: 'name' is required")
        params = _field(o, "parameters", dict, f"output {echo(name)}") or {}
        if params.get("class_count", 0):
            raise InputError(
                f"output {echo(name)}: the classification extension (class_count) is not "
                f"supported; ask for 'prediction' and 'logits'"
            )
        flag = params.get("binary_data")
        if flag is not None:
            if not isinstance(flag, bool):
                raise InputError(f"output {echo(name)}: binary_data must be true or false")
            binary[name] = flag
        names.append(name)
    return tuple(names), binary


@dataclass(frozen=True)
class Body:
    """A response body; ``header_length`` is set when binary outputs follow the JSON."""

    data: bytes
    header_length: int | None


def infer_response(resp: InferenceResponse, call: InferCall) -> Body:
    outputs = []
    chunks = []
    for t in resp.outputs:
        o: dict[str, Any] = {"name": t.name, "datatype": t.datatype, "shape": t.shape}
        if call.is_binary(t.name):
            raw = t.data.tobytes()
            o["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            o["data"] = t.data.ravel().tolist()
        outputs.append(o)
    doc: dict[str, Any] = {"model_name": resp.model_name, "model_version": resp.model_version}
    if resp.id:
        doc["id"] = resp.id
    doc["outputs"] = outputs
    header = json.dumps(doc).encode()
    if not chunks:
        return Body(header, None)
    return Body(header + b"".join(chunks), len(header))


def server_metadata(md: ServerMetadata) -> dict[str, Any]:
    return {"name": md.name, "version": md.version, "extensions": list(md.extensions)}


def _tensor(t: TensorMetadata) -> dict[str, Any]:
    return {"name": t.name, "datatype": t.datatype, "shape": list(t.shape)}


def model_metadata(md: ModelMetadata) -> dict[str, Any]:
    return {
        "name": md.name,
        "versions": list(md.versions),
        "platform": md.platform,
        "inputs": [_tensor(t) for t in md.inputs],
        "outputs": [_tensor(t) for t in md.outputs],
    }


def repository_index(states: Sequence[ModelState]) -> list[dict[str, str]]:
    return [
        {"name": s.name, "version": s.version, "state": s.state, "reason": s.reason} for s in states
    ]


def load_artifact(doc: Any) -> str | None:
    """The ``parameters.artifact`` of a load body (None: reload the configured artifact)."""
    if doc is None:
        return None
    if not isinstance(doc, dict):
        raise InputError("a load request body must be a JSON object")
    params = doc.get("parameters") or {}
    if not isinstance(params, dict):
        raise InputError('"parameters" must be a JSON object')
    artifact = params.get("artifact")
    if artifact is None:
        return None
    if not isinstance(artifact, str) or not artifact:
        raise InputError('load parameter "artifact" must be a non-empty string')
    return artifact
