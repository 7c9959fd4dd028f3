"""Input tensors -> the model's images: every check a request's pixels get before they are queued.

Datatype (FP32, or UINT8 scaled by 1/255), shape against the model input (-1 = any), the number
of images against the server's limit, byte size of raw data or count of typed values, the UINT8
range, then the model's own check (finite values).
Each failure is an :class:`~guard.errors.InputError` whose message says what was expected.
Requests are validated here, before batching; what only the model run can reveal (a finite
input that overflows inside the model) fails that image's own request in the pipeline, never
the batch other clients share.
"""

from __future__ import annotations

import math

import numpy as np

from guard.errors import InputError
from guard.model import OnnxClassifier

from .types import RequestTensor

#: Accepted input datatypes and their little-endian numpy dtypes for raw bytes.
INPUT_DTYPES: dict[str, np.dtype] = {"FP32": np.dtype("<f4"), "UINT8": np.dtype("u1")}


def expected_shape(model: OnnxClassifier) -> list[int]:
    """The model input as the protocol shows it: ``[-1, C, H, W]`` (-1 = any size)."""
    return [-1] + [-1 if d is None else int(d) for d in model.input_shape[1:]]


def to_images(
    model: OnnxClassifier, tensor: RequestTensor, what: str, max_images: int | None = None
) -> np.ndarray:
    """Validate one input tensor and return it as float32 ``(B, ...)`` in the model's layout.

    ``what`` names the tensor in error messages (e.g. ``input 'x'``); ``max_images`` caps ``B``.
    """
    datatype, shape = tensor.datatype, list(tensor.shape)
    if datatype not in INPUT_DTYPES:
        raise InputError(
            f"{what}: datatype {datatype!r} not supported; expected FP32 (or UINT8 "
            f"images, scaled by 1/255)"
        )
    dtype = INPUT_DTYPES[datatype]
    expected = expected_shape(model)
    if len(shape) != len(expected) or any(
        e not in (-1, s) for e, s in zip(expected[1:], shape[1:])
    ):
        raise InputError(
            f"{what}: shape {shape} does not match the model input {expected} (-1 = any)"
        )
    if any(s < 0 for s in shape):
        raise InputError(f"{what}: negative dimension in shape {shape}")
    if shape[0] == 0:
        raise InputError(f"{what}: empty batch (shape {shape}); send at least one image")
    if max_images is not None and shape[0] > max_images:
        raise InputError(
            f"{what}: {shape[0]} images in one request, over this server's limit of "
            f"{max_images} images per request (GUARD_MAX_IMAGES_PER_REQUEST); split them into "
            f"several requests"
        )
    count = math.prod(shape)
    data = tensor.data
    if isinstance(data, (bytes, bytearray, memoryview)):
        if len(data) != count * dtype.itemsize:
            raise InputError(
                f"{what}: {len(data)} raw bytes, but shape {shape} of {datatype} "
                f"needs {count * dtype.itemsize}"
            )
        arr = np.frombuffer(data, dtype=dtype)
    else:
        n = 0 if data is None else int(data.size)
        if data is None or n != count:
            raise InputError(f"{what}: {n} {datatype} values, but shape {shape} needs {count}")
        if datatype == "UINT8" and (data.min() < 0 or data.max() > 255):
            raise InputError(f"{what}: UINT8 values must be in 0..255")
        arr = data.astype(dtype)
    return model.prepare(arr.reshape(shape))  # uint8 -> /255, float32, NaN/Inf check
