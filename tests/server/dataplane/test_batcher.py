"""The batcher on its own data plane (no transport): errors stay with the request that caused
them, large requests run in bounded chunks interleaved with other requests, abandoned requests
stop computing, and the self-check leaves the request metrics alone."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import numpy as np
import pytest

from guard import Guard
from guard.errors import InputError
from server.dataplane import DataPlane, InferenceRequest, RequestTensor, ServedModel
from server.errors import Code, code_of
from server.metrics import Metrics

from ..helpers import INPUT_NAME, MODEL, assert_outputs_match, expected, images

T = TypeVar("T")
MARK = -7.0  # an image starting with this value makes the (wrapped) model run fail


def _with_dataplane(guard: Guard, fn: Callable[[DataPlane], Awaitable[T]], **kw: object) -> T:
    async def go() -> T:
        settings: dict = {"max_batch_size": 8, "max_delay_s": 0.001, "max_queue": 64}
        settings.update(kw)
        dp = DataPlane(ServedModel(guard, MODEL), Metrics(), **settings)
        await dp.start()
        try:
            return await fn(dp)
        finally:
            await dp.stop()

    return asyncio.run(go())


def _req(x: np.ndarray, outputs: tuple[str, ...] = ()) -> InferenceRequest:
    tensor = RequestTensor(INPUT_NAME, "FP32", x.shape, np.ascontiguousarray(x, "<f4").tobytes())
    return InferenceRequest(MODEL, (tensor,), outputs=outputs)


def _record(dp: DataPlane, fail_on_mark: bool = False, slow_s: float = 0.0) -> list[int]:
    """Wrap the batcher's run function: record batch sizes, optionally fail or slow down."""
    sizes: list[int] = []
    run = dp.batcher._run

    def wrapped(x: np.ndarray):
        sizes.append(len(x))
        if slow_s:
            time.sleep(slow_s)
        if fail_on_mark and (x[:, 0, 0, 0] == MARK).any():
            raise RuntimeError("the model run failed")
        return run(x)

    dp.batcher._run = wrapped
    return sizes


async def _settle(results: list) -> list:
    return await asyncio.gather(*results, return_exceptions=True)


async def _until(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    end = time.perf_counter() + timeout
    while not cond():
        assert time.perf_counter() < end, "timed out waiting"
        await asyncio.sleep(0.001)


def test_failed_batch_is_retried_one_request_at_a_time(guard: Guard) -> None:
    """A batch that fails as a whole (not per image) is rerun request by request."""
    good = [images(2, seed=40 + i) for i in range(5)]
    bad = images(3, seed=49)
    bad[1, 0, 0, 0] = MARK

    async def go(dp: DataPlane):
        sizes = _record(dp, fail_on_mark=True)
        xs = good[:2] + [bad] + good[2:]
        out = await _settle([dp.infer(_req(x)) for x in xs])
        return sizes, out

    sizes, out = _with_dataplane(guard, go, max_batch_size=64, max_delay_s=0.05)
    assert sizes[0] == 13, sizes  # all five requests merged into one batch, which failed
    assert isinstance(out[2], RuntimeError) and code_of(out[2]) is Code.INTERNAL
    for x, resp in zip(good, out[:2] + out[3:], strict=True):
        assert not isinstance(resp, BaseException), resp
        assert_outputs_match({t.name: t.data for t in resp.outputs}, expected(guard, x))


def test_large_request_runs_in_bounded_chunks(guard: Guard) -> None:
    big = images(30, seed=3)

    async def go(dp: DataPlane):
        sizes = _record(dp)
        return sizes, await dp.infer(_req(big, outputs=("prediction", "hull_distance", "margins")))

    sizes, resp = _with_dataplane(guard, go, max_batch_size=8)
    assert sizes == [8, 8, 8, 6]
    assert_outputs_match({t.name: t.data for t in resp.outputs}, expected(guard, big))


def test_small_request_interleaves_with_a_large_one(guard: Guard) -> None:
    """A request arriving while a large one runs goes into the very next batch."""
    big, small = images(40, seed=3), images(1, seed=4)

    async def go(dp: DataPlane):
        sizes = _record(dp, slow_s=0.02)
        big_task = asyncio.ensure_future(dp.infer(_req(big)))
        await _until(lambda: len(sizes) > 0)
        n_before = len(sizes)
        resp = await dp.infer(_req(small))
        waited = len(sizes) - n_before  # batches started until the small request was answered
        big_was_running = not big_task.done()
        return waited, big_was_running, resp, await big_task

    waited, big_was_running, resp, big_resp = _with_dataplane(guard, go, max_batch_size=8)
    assert big_was_running, "the 1-image request was answered only after the large one"
    assert waited <= 2, f"the 1-image request waited for {waited} batches of the large one"
    assert_outputs_match({t.name: t.data for t in resp.outputs}, expected(guard, small))
    assert_outputs_match({t.name: t.data for t in big_resp.outputs}, expected(guard, big))


def test_cancelled_request_stops_computing(guard: Guard) -> None:
    big = images(400, seed=6)

    async def go(dp: DataPlane):
        sizes = _record(dp, slow_s=0.01)
        task = asyncio.ensure_future(dp.infer(_req(big)))
        await _until(lambda: len(sizes) >= 2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(0.1)  # any chunk still queued would have run by now
        n_run = sum(sizes)
        after = await dp.infer(_req(images(2, seed=7)))  # the server still serves
        return n_run, sizes, after

    n_run, sizes, after = _with_dataplane(guard, go, max_batch_size=8)
    assert n_run <= 4 * 8, f"{n_run} of 400 images were run after the request was cancelled"
    assert sizes[-1] == 2 and len(after.outputs[0].data) == 2


def test_too_many_images_in_one_request(guard: Guard) -> None:
    async def go(dp: DataPlane):
        ok = await dp.infer(_req(images(5, seed=1)))
        with pytest.raises(InputError) as info:
            await dp.infer(_req(images(6, seed=1)))
        return ok, info.value

    ok, exc = _with_dataplane(guard, go, max_images_per_request=5)
    assert len(ok.outputs[0].data) == 5
    assert code_of(exc) is Code.INVALID_ARGUMENT
    assert "6 images" in str(exc) and "limit of 5" in str(exc), str(exc)


def test_self_check_leaves_the_request_metrics_alone(guard: Guard) -> None:
    metrics = Metrics()

    async def go() -> None:
        dp = DataPlane(ServedModel(guard, MODEL), metrics, max_batch_size=8, max_delay_s=0.0)
        await dp.start()
        assert dp.ready
        await dp.stop()

    asyncio.run(go())
    samples = {
        s.name: s.value
        for family in metrics.registry.collect()
        for s in family.samples
        if s.name.startswith("guard_") and not s.name.endswith("_created")
    }
    touched = {name: v for name, v in samples.items() if v != 0}
    assert not touched, f"the self-check changed the request metrics: {touched}"


def test_spherical_hull_only_for_batches_that_ask(guard: Guard) -> None:
    """A request without the sphere outputs does not pay for the spherical hull (its scores
    carry NaN there, every other score the same); one that names them gets the guard's bounds,
    also when merged with one that does not."""
    x1, x2 = images(3, seed=61), images(2, seed=62)
    want = guard.score(x1)

    async def go(dp: DataPlane):
        lean = await dp.submit(x2, sphere=False)
        pipe: Any = dp.batcher._run
        score = pipe.score
        batches: list[tuple[int, bool]] = []

        def recording(x, logits, feats, *, sphere=True):
            batches.append((len(x), sphere))
            return score(x, logits, feats, sphere=sphere)

        pipe.score = recording
        asked, plain = await asyncio.gather(
            dp.infer(_req(x1, ("sphere_distance", "sphere_lower"))), dp.infer(_req(x2))
        )
        return lean, batches, asked, plain

    lean, batches, asked, plain = _with_dataplane(guard, go, max_delay_s=0.2)
    full = guard.score(x2)
    assert np.isnan(lean.scores.sphere_upper).all()
    np.testing.assert_array_equal(lean.scores.hull_upper, full.hull_upper)
    np.testing.assert_array_equal(lean.scores.ood_score, full.ood_score)
    assert batches == [(5, True)]  # one batch, with the spherical hull for the one that asked
    out = {t.name: t.data for t in asked.outputs}
    np.testing.assert_allclose(out["sphere_distance"], want.sphere_upper.astype("<f4"))
    np.testing.assert_allclose(out["sphere_lower"], want.sphere_lower.astype("<f4"))
    assert {t.name for t in plain.outputs}.isdisjoint({"sphere_distance", "sphere_lower"})
