"""The data plane's request and response model: what every transport converts to and from.

Shaped after the Open Inference Protocol (KServe v2) as MLServer's ``InferenceRequest`` is, but
holding numpy arrays instead of wire types: a transport fills these from protobuf or JSON, and
the data plane never sees either.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from guard.calibrate import Thresholds

#: A tensor's values: little-endian row-major bytes (``raw``), a flat numpy array of typed
#: values, or None when the request carried none.
TensorData = bytes | np.ndarray | None


@dataclass(frozen=True)
class RequestTensor:
    """One input tensor as the client sent it, not yet validated.

    ``data`` is raw bytes or a flat array of typed values (e.g. float32 for FP32, a wider
    integer type for UINT8 so that out-of-range values can be reported); the shape is whatever
    the client claimed.
    """

    name: str
    datatype: str
    shape: tuple[int, ...]
    data: TensorData = None


@dataclass(frozen=True)
class InferenceRequest:
    """An Open Inference Protocol request: one model, its inputs, which outputs to return."""

    model_name: str
    inputs: tuple[RequestTensor, ...]
    outputs: tuple[str, ...] = ()
    """Requested output names; empty = the default outputs."""
    id: str = ""
    parameters: dict[str, object] = field(default_factory=dict)
    model_version: str = ""
    """Empty = the model's only version."""


@dataclass(frozen=True)
class OutputTensor:
    """One named output: ``data`` has shape ``(B, ...)`` and the numpy dtype of ``datatype``
    (little-endian, contiguous), ready to be sent as raw bytes or listed."""

    name: str
    datatype: str
    data: np.ndarray

    @property
    def shape(self) -> list[int]:
        return list(self.data.shape)


@dataclass(frozen=True)
class InferenceResponse:
    model_name: str
    model_version: str
    id: str
    outputs: tuple[OutputTensor, ...]


@dataclass(frozen=True)
class TensorMetadata:
    name: str
    datatype: str
    shape: tuple[int, ...]
    """-1 = any size."""


@dataclass(frozen=True)
class ModelMetadata:
    """What the Open Inference Protocol's ModelMetadata reports."""

    name: str
    versions: tuple[str, ...]
    platform: str
    inputs: tuple[TensorMetadata, ...]
    outputs: tuple[TensorMetadata, ...]


@dataclass(frozen=True)
class ModelState:
    """One row of the model repository index: ``state`` READY or UNAVAILABLE (and why)."""

    name: str
    version: str
    state: str
    reason: str


@dataclass(frozen=True)
class ServerMetadata:
    name: str
    version: str
    extensions: tuple[str, ...] = ()


@dataclass(frozen=True)
class ModelInfo:
    """What guard.v1's GetInfo reports: the served model and its calibrated thresholds."""

    model_name: str
    model_sha256: str
    input_shape: tuple[int, ...]
    class_names: tuple[str, ...]
    n_features: int
    n_train: int
    nonneg: bool
    lipschitz: float
    geometry: bool
    guard_version: str
    thresholds: Thresholds
