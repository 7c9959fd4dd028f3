"""Typed ``contents`` are counted before they are converted, converted without Python objects
per value, and refused when the request also carries ``raw_input_contents`` (as Triton does)."""

from __future__ import annotations

import tracemalloc

import grpc
import numpy as np
import pytest

from guard.errors import InputError
from server.grpc import convert
from server.grpc.gen.guard_v1 import guard_pb2 as gpb
from server.grpc.gen.inference import grpc_service_pb2 as pb

from .helpers import INPUT_NAME, MODEL, Stubs, expect_error, images, infer_request, run

MB = 1 << 20


def _typed(shape: list[int], values: np.ndarray, datatype: str = "FP32") -> pb.ModelInferRequest:
    req = pb.ModelInferRequest(model_name=MODEL)
    t = req.inputs.add(name=INPUT_NAME, datatype=datatype, shape=shape)
    field = t.contents.fp32_contents if datatype == "FP32" else t.contents.uint_contents
    field.extend(values)
    return req


def _peak(fn) -> tuple[int, object]:
    """Peak bytes traced while ``fn()`` runs, and what it returned or raised."""
    tracemalloc.start()
    try:
        out = fn()
    except Exception as exc:  # noqa: BLE001 - returned for the caller to inspect
        out = exc
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak, out


def test_count_is_checked_before_any_conversion():
    n = 2_000_000  # 8 MB of float32 for a [1, 1, 6, 6] input (36 values)
    req = _typed([1, 1, 6, 6], np.zeros(n, np.float32))
    peak, out = _peak(lambda: convert.infer_request(req))
    assert isinstance(out, InputError), out
    assert f"{n} FP32 values" in str(out) and "needs 36" in str(out), str(out)
    assert peak < MB, f"{peak / MB:.1f} MB allocated to refuse a count mismatch"


def test_classify_count_is_checked_before_any_conversion():
    req = gpb.ClassifyRequest(images=gpb.Tensor(datatype="FP32", shape=[1, 1, 6, 6]))
    req.images.fp32.extend(np.zeros(1_000_000, np.float32))
    peak, out = _peak(lambda: convert.classify_images(req))
    assert isinstance(out, InputError) and "1000000 FP32 values" in str(out), out
    assert peak < MB, f"{peak / MB:.1f} MB allocated to refuse a count mismatch"


@pytest.mark.parametrize("datatype", ["FP32", "UINT8"])
def test_typed_values_convert_without_python_objects(datatype):
    n_images = 5_000  # 180,000 values
    rng = np.random.default_rng(0)
    if datatype == "FP32":
        values = rng.random(n_images * 36, dtype=np.float32)
    else:
        values = rng.integers(0, 256, n_images * 36).astype(np.uint32)
    req = _typed([n_images, 1, 6, 6], values, datatype)
    peak, out = _peak(lambda: convert.infer_request(req))
    assert not isinstance(out, Exception), out
    data = out.inputs[0].data
    np.testing.assert_array_equal(data, values)
    # a copy as 8-byte values at most; a Python object per value would take 4-8x more
    assert peak <= 8 * len(values) + MB, f"{peak / len(values):.0f} bytes per value"


def test_raw_and_typed_contents_together_are_refused(server):
    x = images(1, seed=2)
    req = infer_request(x)  # raw_input_contents
    req.inputs[0].contents.fp32_contents.extend(x.ravel())
    with pytest.raises(InputError, match="raw_input_contents"):
        convert.infer_request(req)
    classify = gpb.ClassifyRequest(
        images=gpb.Tensor(datatype="FP32", shape=[1, 1, 6, 6], raw=x.tobytes())
    )
    classify.images.fp32.extend(x.ravel())
    with pytest.raises(InputError, match="raw"):
        convert.classify_images(classify)

    async def go():
        async with grpc.aio.insecure_channel(server.target) as ch:
            return await expect_error(
                Stubs(ch).oip.ModelInfer(req), grpc.StatusCode.INVALID_ARGUMENT
            )

    details = run(go())
    assert "contents" in details and "raw_input_contents" in details, details
