"""The data plane without any transport: request model in, named arrays out, the same numbers as
the guard itself, and every bad request refused with an error the status table maps."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import numpy as np
import pytest

from guard import Guard
from guard.errors import InputError
from server.dataplane import DataPlane, InferenceRequest, RequestTensor, ServedModel
from server.dataplane.outputs import DEFAULT_OUTPUTS, OUTPUTS
from server.errors import Code, ModelNotFound, NotReady, code_of
from server.metrics import Metrics

from ..helpers import INPUT_NAME, MODEL, assert_outputs_match, expected, images

T = TypeVar("T")


def _with_dataplane(
    guard: Guard, fn: Callable[[DataPlane], Awaitable[T]], geometry: bool = True
) -> T:
    async def go() -> T:
        dp = DataPlane(
            ServedModel(guard, MODEL, geometry=geometry),
            Metrics(),
            max_batch_size=8,
            max_delay_s=0.001,
            max_queue=16,
        )
        assert not dp.ready
        await dp.start()
        try:
            return await fn(dp)
        finally:
            await dp.stop()

    return asyncio.run(go())


def _raw(x: np.ndarray, name: str = INPUT_NAME) -> RequestTensor:
    return RequestTensor(name, "FP32", x.shape, np.ascontiguousarray(x, "<f4").tobytes())


def test_infer_matches_guard(guard: Guard) -> None:
    x = images(5, seed=31)
    typed = RequestTensor(INPUT_NAME, "FP32", x.shape, x.ravel())

    async def go(dp: DataPlane):
        assert dp.ready and dp.model_ready(MODEL) and not dp.model_ready("other")
        default = await dp.infer(InferenceRequest(MODEL, (_raw(x),), id="7"))
        every = await dp.infer(InferenceRequest(MODEL, (typed,), outputs=tuple(OUTPUTS)))
        return default, every

    default, every = _with_dataplane(guard, go)
    assert (default.model_name, default.model_version, default.id) == (MODEL, "1", "7")
    assert [t.name for t in default.outputs] == DEFAULT_OUTPUTS
    for resp in (default, every):
        got = {t.name: t.data for t in resp.outputs}
        assert_outputs_match(got, expected(guard, x))
        for t in resp.outputs:
            assert t.data.dtype.str in ("<f4", "<i8", "<i4", "|b1"), t.name
            assert t.shape[0] == len(x) and t.data.flags.c_contiguous, t.name


def test_uint8_is_scaled(guard: Guard) -> None:
    x8 = np.random.default_rng(5).integers(0, 256, size=(3, 1, 6, 6), dtype=np.uint8)
    req = InferenceRequest(
        MODEL,
        (RequestTensor(INPUT_NAME, "UINT8", x8.shape, x8.tobytes()),),
        outputs=("prediction", "hull_distance"),
    )
    resp = _with_dataplane(guard, lambda dp: dp.infer(req))
    got = {t.name: t.data for t in resp.outputs}
    assert_outputs_match(got, expected(guard, x8.astype(np.float32) / 255.0))


def test_classify_and_info(guard: Guard) -> None:
    x = images(3, seed=4)

    async def go(dp: DataPlane):
        return await dp.classify("", _raw(x, "images")), dp.info(MODEL), dp.model_metadata(MODEL)

    c, info, md = _with_dataplane(guard, go)
    want = expected(guard, x)
    assert c.model_name == MODEL and c.class_names == tuple(guard.class_names_)
    np.testing.assert_array_equal(c.result.pred, want["prediction"])
    np.testing.assert_allclose(c.result.scores.hull_upper, want["hull_distance"], rtol=1e-9)
    assert info.thresholds == guard.thresholds_ and info.n_train == len(guard.radii_)
    assert [t.name for t in md.outputs] == list(OUTPUTS)
    assert md.inputs[0].shape == (-1, 1, 6, 6)


def test_geometry_off_serves_the_bare_model(guard: Guard) -> None:
    x = images(2, seed=8)

    async def go(dp: DataPlane):
        resp = await dp.infer(InferenceRequest(MODEL, (_raw(x),)))
        with pytest.raises(NotReady, match="needs the geometry"):
            await dp.classify(MODEL, _raw(x, "images"))
        with pytest.raises(InputError, match="needs the geometry"):
            await dp.infer(InferenceRequest(MODEL, (_raw(x),), outputs=("hull_distance",)))
        return resp, dp.model_metadata(MODEL)

    resp, md = _with_dataplane(guard, go, geometry=False)
    assert [t.name for t in resp.outputs] == ["logits", "prediction"]
    assert [t.name for t in md.outputs] == ["logits", "prediction"]
    np.testing.assert_array_equal(resp.outputs[1].data, expected(guard, x)["prediction"])


# (id, request, error class, code, words in the message)
BAD = [
    (
        "model",
        InferenceRequest("other", (_raw(images(1, 0)),)),
        ModelNotFound,
        Code.NOT_FOUND,
        ["'other'", repr(MODEL)],
    ),
    (
        "no_input",
        InferenceRequest(MODEL, ()),
        InputError,
        Code.INVALID_ARGUMENT,
        ["exactly one input"],
    ),
    (
        "input_name",
        InferenceRequest(MODEL, (_raw(images(1, 0), "y"),)),
        InputError,
        Code.INVALID_ARGUMENT,
        ["unknown input 'y'"],
    ),
    (
        "no_values",
        InferenceRequest(MODEL, (RequestTensor(INPUT_NAME, "FP32", (1, 1, 6, 6), None),)),
        InputError,
        Code.INVALID_ARGUMENT,
        ["0 FP32 values", "needs 36"],
    ),
    (
        "uint8_range",
        InferenceRequest(
            MODEL, (RequestTensor(INPUT_NAME, "UINT8", (1, 1, 6, 6), np.full(36, 256, np.int64)),)
        ),
        InputError,
        Code.INVALID_ARGUMENT,
        ["0..255"],
    ),
    (
        "datatype",
        InferenceRequest(MODEL, (RequestTensor(INPUT_NAME, "BYTES", (1,), b"x"),)),
        InputError,
        Code.INVALID_ARGUMENT,
        ["'BYTES'"],
    ),
    (
        "nan",
        InferenceRequest(MODEL, (_raw(np.full((1, 1, 6, 6), np.nan, np.float32)),)),
        InputError,
        Code.INVALID_ARGUMENT,
        ["NaN"],
    ),
]


@pytest.mark.parametrize("req,cls,code,words", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_requests(
    guard: Guard, req: InferenceRequest, cls: type, code: Code, words: list[str]
) -> None:
    async def go(dp: DataPlane) -> BaseException:
        with pytest.raises(cls) as info:
            await dp.infer(req)
        return info.value

    exc = _with_dataplane(guard, go)
    assert code_of(exc) is code
    for w in words:
        assert w in str(exc), (w, str(exc))


def test_not_ready_before_start_and_after_stop(guard: Guard) -> None:
    async def go() -> list[BaseException]:
        dp = DataPlane(
            ServedModel(guard, MODEL), Metrics(), max_batch_size=4, max_delay_s=0.0, max_queue=4
        )
        req = InferenceRequest(MODEL, (_raw(images(1, 0)),))
        errors = []
        for phase in ("before", "after"):
            if phase == "after":
                await dp.start()
                await dp.stop()
            try:
                await dp.infer(req)
            except NotReady as exc:
                errors.append(exc)
        assert not dp.ready
        return errors

    errors = asyncio.run(go())
    assert len(errors) == 2 and all(code_of(e) is Code.UNAVAILABLE for e in errors)
