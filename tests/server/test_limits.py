"""Limits per request over gRPC: images per request are capped, a large request runs in bounded
chunks that other clients' requests interleave with, and a request its client abandoned
(cancelled, or past its deadline) stops computing."""

from __future__ import annotations

import asyncio
import statistics
import time

import grpc
import pytest

from guard.errors import InputError
from server.cli import build_parser
from server.settings import Settings

from .helpers import (
    Stubs,
    assert_outputs_match,
    decode,
    expect_error,
    expected,
    images,
    infer_request,
    run,
)

BIG = 1024
#: the 1-image request may take this many times longer than alone while the large one runs
#: (measured ~3x with the chunks; ~150x when the large request ran as one batch)
MAX_SLOWDOWN = 30.0


async def _until(cond, timeout: float = 10.0) -> None:
    end = time.perf_counter() + timeout
    while not cond():
        assert time.perf_counter() < end, "timed out waiting"
        await asyncio.sleep(0.001)


def test_max_images_per_request_setting():
    assert Settings().max_images_per_request == 1024
    s = Settings.from_env({"GUARD_MAX_IMAGES_PER_REQUEST": "16"})
    assert s.max_images_per_request == 16
    args = build_parser().parse_args(["serve", "--max-images-per-request", "7"])
    assert args.max_images_per_request == 7
    with pytest.raises(InputError, match="max_images_per_request"):
        Settings.from_env({"GUARD_MAX_IMAGES_PER_REQUEST": "0"})


def test_too_many_images_is_invalid_argument(make_server, guard):
    st = make_server(max_images_per_request=8)
    x = images(9, seed=1)

    async def go():
        async with grpc.aio.insecure_channel(st.target) as ch:
            s = Stubs(ch)
            details = await expect_error(
                s.oip.ModelInfer(infer_request(x)), grpc.StatusCode.INVALID_ARGUMENT
            )
            return details, decode(await s.oip.ModelInfer(infer_request(x[:8])))

    details, ok = run(go())
    assert "9 images" in details and "limit of 8" in details, details
    assert_outputs_match(ok, expected(guard, x[:8]))


def test_small_request_is_not_stuck_behind_a_large_one(make_server, guard):
    st = make_server(max_batch_size=16, max_queue_delay_ms=1.0)
    st.slow_down(0.0)  # records the batch sizes
    big, small = images(BIG, seed=11), images(1, seed=12)
    out = ["prediction", "hull_distance"]

    async def go():
        async with grpc.aio.insecure_channel(st.target) as ch:
            s = Stubs(ch)

            async def timed() -> float:
                t0 = time.perf_counter()
                await s.oip.ModelInfer(infer_request(small, outputs=out))
                return time.perf_counter() - t0

            alone = statistics.median([await timed() for _ in range(7)])
            n0 = len(st.batches)
            big_call = asyncio.ensure_future(s.oip.ModelInfer(infer_request(big, outputs=out)))
            await _until(lambda: len(st.batches) > n0)  # the large request is running
            during = [await timed()]
            while not big_call.done() and len(during) < 5:
                during.append(await timed())
            return alone, during, decode(await big_call)

    alone, during, big_out = run(go())
    ratio = max(during) / alone
    print(f"1-image latency alone {alone * 1e3:.1f} ms, beside {BIG} images {ratio:.1f}x")
    assert ratio < MAX_SLOWDOWN, (alone, during)
    assert max(st.batches) <= 16, max(st.batches)
    assert_outputs_match(big_out, expected(guard, big))


@pytest.mark.parametrize("how", ["cancel", "deadline"])
def test_abandoned_request_stops_computing(make_server, guard, how):
    st = make_server(max_batch_size=8, max_queue_delay_ms=0.0, slow_s=0.01)
    big = images(400, seed=13)  # 50 chunks, >= 0.5 s if they all ran

    async def go():
        async with grpc.aio.insecure_channel(st.target) as ch:
            s = Stubs(ch)
            if how == "cancel":
                call = s.oip.ModelInfer(infer_request(big))
                await _until(lambda: len(st.batches) >= 2)
                call.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await call
            else:
                await expect_error(
                    s.oip.ModelInfer(infer_request(big), timeout=0.05),
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                )
            await asyncio.sleep(0.2)  # chunks still queued would run meanwhile
            n_run = sum(st.batches)
            after = decode(await s.oip.ModelInfer(infer_request(images(2, seed=14))))
            return n_run, after

    n_run, after = run(go())
    assert n_run <= 100, f"{n_run} of 400 images were run for the abandoned request"
    assert_outputs_match(after, expected(guard, images(2, seed=14)))
