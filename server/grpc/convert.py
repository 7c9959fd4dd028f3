"""The only place protobuf meets the data plane: messages -> request model, results -> messages.

Nothing is validated here beyond what only the wire format knows (how many ``raw_input_contents``
entries there are, raw and typed values never both, which ``contents`` field holds a datatype's
typed values and how many it holds); the meaning of the values is checked by the data plane.
Typed values are counted (``len()`` of the repeated field) before any is converted, and converted
straight into a numpy array, never through a Python object per value.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from guard.errors import InputError

from ..dataplane import (
    ClassifyResult,
    InferenceRequest,
    InferenceResponse,
    ModelInfo,
    ModelMetadata,
    ModelState,
    RequestTensor,
    ServerMetadata,
)
from .gen.guard_v1 import guard_pb2 as gpb
from .gen.inference import grpc_service_pb2 as pb

# datatype -> (typed-contents field of InferTensorContents, numpy dtype to read it as); UINT8
# arrives as uint32 values and is read as such, so that out-of-range values can be reported
_TYPED_CONTENTS: dict[str, tuple[str, type]] = {
    "FP32": ("fp32_contents", np.float32),
    "UINT8": ("uint_contents", np.uint32),
}


def typed_values(
    values: Sequence[float], dtype: type, datatype: str, shape: Sequence[int], what: str
) -> np.ndarray | None:
    """A repeated field of typed values as a flat numpy array, counted against ``shape`` first.

    None when there are no values, or the shape has a negative dimension (the data plane
    refuses both, with nothing converted).
    """
    n = len(values)
    if n == 0 or any(d < 0 for d in shape):
        return None
    count = math.prod(shape)
    if n != count:
        raise InputError(f"{what}: {n} {datatype} values, but shape {list(shape)} needs {count}")
    if hasattr(values, "__array__"):  # protobuf's upb containers: one copy, no Python objects
        return np.asarray(values, dtype=dtype)
    return np.fromiter(values, dtype=dtype, count=n)  # pure-Python protobuf: no list either


# ------------------------------------------------------------------ Open Inference Protocol
def infer_request(req: pb.ModelInferRequest) -> InferenceRequest:
    raw = req.raw_input_contents
    if raw and len(raw) != len(req.inputs):
        n = len(req.inputs)
        raise InputError(
            f"expected {n} raw_input_contents entr{'y' if n == 1 else 'ies'} (one "
            f"per input), got {len(raw)}"
        )
    inputs = []
    for i, t in enumerate(req.inputs):
        what = f"input {t.name!r}"
        data: bytes | np.ndarray | None = None
        if raw:
            if t.HasField("contents"):  # as Triton: the values come in one place only
                raise InputError(
                    f"{what}: typed contents must not be set when the request uses "
                    f"raw_input_contents; send the values in one of them"
                )
            data = raw[i]
        elif t.datatype in _TYPED_CONTENTS:
            field, dtype = _TYPED_CONTENTS[t.datatype]
            data = typed_values(getattr(t.contents, field), dtype, t.datatype, t.shape, what)
        inputs.append(RequestTensor(t.name, t.datatype, tuple(t.shape), data))
    return InferenceRequest(
        model_name=req.model_name,
        inputs=tuple(inputs),
        outputs=tuple(o.name for o in req.outputs),
        id=req.id,
        parameters=_parameters(req.parameters),
        model_version=req.model_version,
    )


def _parameters(params: object) -> dict[str, object]:
    """``map<string, InferParameter>`` -> ``{name: bool | int | str}``."""
    out: dict[str, object] = {}
    for key, p in params.items():  # type: ignore[attr-defined]
        choice = p.WhichOneof("parameter_choice")
        out[key] = getattr(p, choice) if choice else None
    return out


def infer_response(resp: InferenceResponse) -> pb.ModelInferResponse:
    msg = pb.ModelInferResponse(
        model_name=resp.model_name, model_version=resp.model_version, id=resp.id
    )
    for t in resp.outputs:
        msg.outputs.add(name=t.name, datatype=t.datatype, shape=t.shape)
        msg.raw_output_contents.append(t.data.tobytes())
    return msg


def server_metadata(md: ServerMetadata) -> pb.ServerMetadataResponse:
    return pb.ServerMetadataResponse(
        name=md.name, version=md.version, extensions=list(md.extensions)
    )


def model_metadata(md: ModelMetadata) -> pb.ModelMetadataResponse:
    msg = pb.ModelMetadataResponse(name=md.name, versions=list(md.versions), platform=md.platform)
    for t in md.inputs:
        msg.inputs.add(name=t.name, datatype=t.datatype, shape=list(t.shape))
    for t in md.outputs:
        msg.outputs.add(name=t.name, datatype=t.datatype, shape=list(t.shape))
    return msg


# ------------------------------------------------------------------ guard.v1
def classify_images(req: gpb.ClassifyRequest) -> RequestTensor:
    t = req.images
    if t.raw and len(t.fp32):
        raise InputError("images: both raw and fp32 values are set; send them in one of the two")
    data: bytes | np.ndarray | None = t.raw if t.raw else None
    if data is None and t.datatype == "FP32":
        data = typed_values(t.fp32, np.float32, "FP32", t.shape, "images")
    return RequestTensor("images", t.datatype, tuple(t.shape), data)


def classify_response(c: ClassifyResult) -> gpb.ClassifyResponse:
    resp = gpb.ClassifyResponse(model_name=c.model_name)
    r = c.result
    for i in range(len(r)):
        pred = int(r.pred[i])
        res = resp.results.add(
            prediction=pred, class_name=c.class_names[pred], logits=r.logits[i].tolist()
        )
        if r.scores is None or r.decisions is None:
            continue
        s, d = r.scores, r.decisions
        res.margins.extend(s.margins[i].tolist())
        res.margin_min = float(s.d_min[i])
        res.nearest_class = int(s.nearest_class[i])
        res.hull_distance = float(s.hull_upper[i])
        res.hull_lower = float(s.hull_lower[i])
        res.sphere_distance = float(s.sphere_upper[i])
        res.sphere_lower = float(s.sphere_lower[i])
        res.ambiguity = float(s.ambiguity[i])
        res.in_union = bool(s.in_union[i])
        res.n_balls = int(s.n_balls[i])
        res.union_slack = float(s.union_slack[i])
        res.ood_score = float(s.ood_score[i])
        res.p_value = float(s.p_value[i])
        for idx, w in zip(s.support_idx[i], s.support_alpha[i]):
            if idx >= 0:
                res.support.add(index=int(idx), weight=float(w))
        res.decision.abstain = bool(d.abstain[i])
        res.decision.adversarial = bool(d.adversarial[i])
        res.decision.flags = int(d.flags[i])
        res.decision.reasons.extend(d.reasons[i])
    return resp


def info_response(info: ModelInfo) -> gpb.InfoResponse:
    t = info.thresholds
    return gpb.InfoResponse(
        model_name=info.model_name,
        model_sha256=info.model_sha256,
        input_shape=list(info.input_shape),
        class_names=list(info.class_names),
        n_features=info.n_features,
        n_train=info.n_train,
        nonneg=info.nonneg,
        lipschitz=info.lipschitz,
        geometry=info.geometry,
        guard_version=info.guard_version,
        thresholds=gpb.Thresholds(
            ambiguity=t.ambiguity,
            hull=t.hull,
            d_min=t.d_min,
            target_abstain_rate=t.target_abstain_rate or 0.0,
            target_flag_rate=t.target_flag_rate or 0.0,
            n_calib=t.n_calib,
        ),
    )


#: The load parameter (a ``string_param``) naming another artifact directory to load.
ARTIFACT_PARAMETER = "artifact"


def load_artifact(req: pb.RepositoryModelLoadRequest) -> str | None:
    """The ``artifact`` parameter of a load request (None: reload the configured artifact)."""
    if ARTIFACT_PARAMETER not in req.parameters:
        return None
    p = req.parameters[ARTIFACT_PARAMETER]
    if p.WhichOneof("parameter_choice") != "string_param" or not p.string_param:
        raise InputError(f"load parameter {ARTIFACT_PARAMETER!r} must be a non-empty string_param")
    return str(p.string_param)


def repository_index(states: Sequence[ModelState]) -> pb.RepositoryIndexResponse:
    return pb.RepositoryIndexResponse(
        models=[
            pb.RepositoryIndexResponse.ModelIndex(
                name=s.name, version=s.version, state=s.state, reason=s.reason
            )
            for s in states
        ]
    )
