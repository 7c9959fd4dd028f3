"""One client's input never fails another client's request, even inside the same merged batch.

An image of finite but huge values (3e38) passes the NaN/Inf check and only overflows inside the
model; that error belongs to its own request. The others merged into the batch are answered
normally, with exactly the numbers they get alone.
"""

from __future__ import annotations

import asyncio

import grpc
import numpy as np

from .helpers import (
    Stubs,
    assert_outputs_match,
    classify_request,
    decode,
    expect_error,
    expected,
    images,
    infer_request,
    run,
)

N_GOOD = 20
HUGE = 3e38  # finite float32, overflows in the first layer


def _overflowing(n: int, bad: int, seed: int) -> np.ndarray:
    x = images(n, seed=seed)
    x[bad] = HUGE
    return x


def test_overflowing_image_fails_only_its_own_request(make_server, guard):
    # a long delay and a slow first batch make the requests merge into shared batches
    st = make_server(max_queue_delay_ms=50.0, max_batch_size=64, slow_s=0.05)
    good = [images(1 + i % 3, seed=700 + i) for i in range(N_GOOD)]
    bad = _overflowing(4, bad=2, seed=799)

    async def go():
        async with grpc.aio.insecure_channel(st.target) as ch:
            s = Stubs(ch)
            calls = [s.oip.ModelInfer(infer_request(x)) for x in good[: N_GOOD // 2]]
            calls.append(
                expect_error(s.oip.ModelInfer(infer_request(bad)), grpc.StatusCode.INVALID_ARGUMENT)
            )
            calls.append(
                expect_error(
                    s.guard.Classify(classify_request(_overflowing(2, bad=1, seed=798))),
                    grpc.StatusCode.INVALID_ARGUMENT,
                )
            )
            calls += [s.oip.ModelInfer(infer_request(x)) for x in good[N_GOOD // 2 :]]
            return await asyncio.gather(*calls)

    out = run(go())
    details, classify_details = out[N_GOOD // 2], out[N_GOOD // 2 + 1]
    responses = out[: N_GOOD // 2] + out[N_GOOD // 2 + 2 :]
    for x, resp in zip(good, responses, strict=True):
        assert_outputs_match(decode(resp), expected(guard, x))
    assert "image 2 of this request" in details and "overflow" in details, details
    assert "3e+38" in details, details
    assert "image 1 of this request" in classify_details, classify_details
    merged = len(st.batches) < N_GOOD + 2
    assert merged, f"{len(st.batches)} batches for {N_GOOD + 2} requests: nothing was merged"


def test_overflowing_image_at_any_position_of_a_split_request(make_server, guard):
    """A request split into several batches names the image by its index in the request."""
    st = make_server(max_batch_size=4, max_queue_delay_ms=0.0)
    bad = _overflowing(10, bad=9, seed=5)

    async def go():
        async with grpc.aio.insecure_channel(st.target) as ch:
            s = Stubs(ch)
            details = await expect_error(
                s.oip.ModelInfer(infer_request(bad)), grpc.StatusCode.INVALID_ARGUMENT
            )
            return details, decode(await s.oip.ModelInfer(infer_request(bad[:9])))

    details, ok = run(go())
    assert "image 9 of this request" in details, details
    assert_outputs_match(ok, expected(guard, bad[:9]))
