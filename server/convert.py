"""The only place protobuf meets numpy: requests -> input arrays, results -> responses."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

import server.gen  # noqa: F401  (puts the generated modules on sys.path)
from guard import Guard, __version__
from guard.errors import InputError
from guard_v1 import guard_pb2 as gpb
from inference import grpc_service_pb2 as pb

from .pipeline import BatchResult

# datatype -> (numpy dtype, typed-contents field)
_INPUT_TYPES = {"FP32": (np.dtype("<f4"), "fp32_contents"), "UINT8": (np.dtype("u1"), "uint_contents")}


def _expected_shape(guard: Guard) -> list[int]:
    return [-1] + [-1 if d is None else int(d) for d in guard.model_.input_shape[1:]]


def to_images(guard: Guard, datatype: str, shape: list[int], raw: bytes | None,
              typed: list | None, what: str) -> np.ndarray:
    """Validate one input tensor and return it as float32 in the model's layout."""
    if datatype not in _INPUT_TYPES:
        raise InputError(f"{what}: datatype {datatype!r} not supported; expected FP32 (or UINT8 "
                         f"images, scaled by 1/255)")
    dtype, _ = _INPUT_TYPES[datatype]
    expected = _expected_shape(guard)
    if len(shape) != len(expected) or any(e not in (-1, s) for e, s in zip(expected[1:], shape[1:])):
        raise InputError(f"{what}: shape {list(shape)} does not match the model input {expected} "
                         f"(-1 = any)")
    if any(s < 0 for s in shape):
        raise InputError(f"{what}: negative dimension in shape {list(shape)}")
    if shape[0] == 0:
        raise InputError(f"{what}: empty batch (shape {list(shape)}); send at least one image")
    count = math.prod(shape)
    if raw is not None:
        if len(raw) != count * dtype.itemsize:
            raise InputError(f"{what}: {len(raw)} raw bytes, but shape {list(shape)} of {datatype} "
                             f"needs {count * dtype.itemsize}")
        arr = np.frombuffer(raw, dtype=dtype)
    else:
        if typed is None or len(typed) != count:
            raise InputError(f"{what}: {0 if typed is None else len(typed)} {datatype} values, but "
                             f"shape {list(shape)} needs {count}")
        arr = np.asarray(typed, dtype=np.float32 if datatype == "FP32" else np.int64)
        if datatype == "UINT8" and (arr.min() < 0 or arr.max() > 255):
            raise InputError(f"{what}: UINT8 values must be in 0..255")
        arr = arr.astype(dtype)
    arr = arr.reshape(shape)
    return guard.model_.prepare(arr)  # uint8 -> /255, float32, NaN/Inf check


# ------------------------------------------------------------------ Open Inference Protocol
@dataclass(frozen=True)
class OutputSpec:
    datatype: str
    per_image: Callable[[Guard], list[int]]  # shape after the batch dimension
    value: Callable[[BatchResult], np.ndarray]
    geometry: bool = True  # needs the geometry (absent when it is off)
    doc: str = ""


def _scalar(_g: Guard) -> list[int]:
    return []


def _classes(g: Guard) -> list[int]:
    return [len(g.class_names_)]


def _support(g: Guard) -> list[int]:
    return [g.top_support]


OUTPUTS: dict[str, OutputSpec] = {
    "logits": OutputSpec("FP32", _classes, lambda r: r.logits, False, "model logits"),
    "prediction": OutputSpec("INT64", _scalar, lambda r: r.pred, False, "argmax of the logits"),
    "abstain": OutputSpec("BOOL", _scalar, lambda r: r.decisions.abstain, True,
                          "do not act on the prediction (out of distribution or ambiguous)"),
    "flags": OutputSpec("INT32", _scalar, lambda r: r.decisions.flags, True,
                        "bit mask: 1 adversarial, 2 out of distribution, 4 ambiguous"),
    "margin_min": OutputSpec("FP32", _scalar, lambda r: r.scores.d_min, True,
                             "exact distance to the nearest decision boundary"),
    "nearest_class": OutputSpec("INT64", _scalar, lambda r: r.scores.nearest_class, True,
                                "class across the nearest boundary"),
    "hull_distance": OutputSpec("FP32", _scalar, lambda r: r.scores.hull_upper, True,
                                "distance to the training hull (certified upper bound)"),
    "hull_lower": OutputSpec("FP32", _scalar, lambda r: r.scores.hull_lower, True,
                             "certified lower bound of the hull distance"),
    "ambiguity": OutputSpec("FP32", _scalar, lambda r: r.scores.ambiguity, True,
                            "margin_min - hull_distance (negative = ambiguous)"),
    "ood_score": OutputSpec("FP32", _scalar, lambda r: r.scores.ood_score, True,
                            "combined out-of-distribution score (higher = more OOD)"),
    "p_value": OutputSpec("FP32", _scalar, lambda r: r.scores.p_value, True,
                          "conformal p-value of ood_score; abstain when below the target rate"),
    "in_union": OutputSpec("BOOL", _scalar, lambda r: r.scores.in_union, True,
                           "inside the union of learned regions"),
    "margins": OutputSpec("FP32", _classes, lambda r: r.scores.margins, True,
                          "distance to each class's boundary (NaN at the prediction)"),
    "support_indices": OutputSpec("INT64", _support, lambda r: r.scores.support_idx, True,
                                  "training images supporting the hull projection (-1 = none)"),
    "support_weights": OutputSpec("FP32", _support, lambda r: r.scores.support_alpha, True,
                                  "their convex weights"),
}
DEFAULT_OUTPUTS = [n for n in OUTPUTS if n not in ("margins", "support_indices",
                                                   "support_weights")]
_NUMPY = {"FP32": "<f4", "INT64": "<i8", "INT32": "<i4", "BOOL": "?"}


def infer_request_to_images(guard: Guard, input_name: str, req: pb.ModelInferRequest) -> np.ndarray:
    if len(req.inputs) != 1:
        raise InputError(f"expected exactly one input tensor named {input_name!r}, got "
                         f"{[i.name for i in req.inputs]}")
    t = req.inputs[0]
    if t.name != input_name:
        raise InputError(f"unknown input {t.name!r}; this model's input is {input_name!r}")
    if req.raw_input_contents and len(req.raw_input_contents) != 1:
        raise InputError(f"expected 1 raw_input_contents entry, got {len(req.raw_input_contents)}")
    raw = req.raw_input_contents[0] if req.raw_input_contents else None
    typed = None
    if raw is None and t.datatype in _INPUT_TYPES:
        typed = list(getattr(t.contents, _INPUT_TYPES[t.datatype][1]))
    return to_images(guard, t.datatype, list(t.shape), raw, typed, f"input {t.name!r}")


def requested_outputs(req: pb.ModelInferRequest, geometry: bool) -> list[str]:
    names = [o.name for o in req.outputs] or [
        n for n in DEFAULT_OUTPUTS if geometry or not OUTPUTS[n].geometry
    ]
    for n in names:
        if n not in OUTPUTS:
            raise InputError(f"unknown output {n!r}; available: {', '.join(OUTPUTS)}")
        if OUTPUTS[n].geometry and not geometry:
            raise InputError(f"output {n!r} needs the geometry, which this server has disabled")
    return names


def infer_response(model_name: str, req: pb.ModelInferRequest, names: list[str],
                   result: BatchResult) -> pb.ModelInferResponse:
    resp = pb.ModelInferResponse(model_name=model_name, model_version="1", id=req.id)
    for n in names:
        spec = OUTPUTS[n]
        arr = np.ascontiguousarray(spec.value(result), dtype=_NUMPY[spec.datatype])
        resp.outputs.add(name=n, datatype=spec.datatype, shape=list(arr.shape))
        resp.raw_output_contents.append(arr.tobytes())
    return resp


def model_metadata(guard: Guard, model_name: str, input_name: str,
                   geometry: bool) -> pb.ModelMetadataResponse:
    resp = pb.ModelMetadataResponse(name=model_name, versions=["1"],
                                    platform="guard_onnxruntime")
    resp.inputs.add(name=input_name, datatype="FP32", shape=_expected_shape(guard))
    for n, spec in OUTPUTS.items():
        if geometry or not spec.geometry:
            resp.outputs.add(name=n, datatype=spec.datatype, shape=[-1] + spec.per_image(guard))
    return resp


# ------------------------------------------------------------------ guard.v1
def classify_request_to_images(guard: Guard, req: gpb.ClassifyRequest) -> np.ndarray:
    t = req.images
    raw = t.raw if t.raw else None
    typed = list(t.fp32) if t.datatype == "FP32" and raw is None else None
    return to_images(guard, t.datatype, list(t.shape), raw, typed, "images")


def classify_response(guard: Guard, model_name: str, r: BatchResult) -> gpb.ClassifyResponse:
    resp = gpb.ClassifyResponse(model_name=model_name)
    names = guard.class_names_
    for i in range(len(r)):
        res = resp.results.add(prediction=int(r.pred[i]), class_name=names[int(r.pred[i])],
                               logits=r.logits[i].tolist())
        if r.scores is None:
            continue
        s, d = r.scores, r.decisions
        res.margins.extend(s.margins[i].tolist())
        res.margin_min = float(s.d_min[i])
        res.nearest_class = int(s.nearest_class[i])
        res.hull_distance = float(s.hull_upper[i])
        res.hull_lower = float(s.hull_lower[i])
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


def info_response(guard: Guard, model_name: str, geometry: bool) -> gpb.InfoResponse:
    t = guard.thresholds_
    return gpb.InfoResponse(
        model_name=model_name, model_sha256=guard.model_.sha256,
        input_shape=_expected_shape(guard), class_names=guard.class_names_,
        n_features=int(guard.W_.shape[1]), n_train=int(len(guard.radii_)),
        nonneg=guard.nonneg_, lipschitz=guard.lipschitz_, geometry=geometry,
        guard_version=__version__,
        thresholds=gpb.Thresholds(
            ambiguity=t.ambiguity, hull=t.hull, d_min=t.d_min,
            target_abstain_rate=t.target_abstain_rate or 0.0,
            target_flag_rate=t.target_flag_rate or 0.0, n_calib=t.n_calib,
        ),
    )
