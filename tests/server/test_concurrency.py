"""Dynamic batching under concurrency: merged batches give every client its own exact answer."""

from __future__ import annotations

import asyncio

import grpc
import numpy as np

from .helpers import Stubs, classify_request, decode, expected, images, infer_request, run

N_CLIENTS = 32


def test_concurrent_clients_get_their_own_answers(make_server, guard):
    st = make_server(max_queue_delay_ms=20.0, max_batch_size=64)
    rng = np.random.default_rng(0)
    xs = [images(int(rng.integers(1, 4)), seed=1000 + i) for i in range(N_CLIENTS)]
    xs[5] = 6.0 * xs[5]  # one far-away (out of distribution) request in the mix

    async def client(s: Stubs, i: int, x: np.ndarray):
        if i % 4 == 3:  # a quarter of the clients use the typed API
            r = await s.guard.Classify(classify_request(x))
            return {
                "prediction": np.array([p.prediction for p in r.results]),
                "margin_min": np.array([p.margin_min for p in r.results]),
                "hull_distance": np.array([p.hull_distance for p in r.results]),
                "flags": np.array([p.decision.flags for p in r.results]),
            }
        return decode(
            await s.oip.ModelInfer(
                infer_request(x, outputs=["prediction", "margin_min", "hull_distance", "flags"])
            )
        )

    async def go():
        # two channels, 16 clients each, all in flight at once
        async with (
            grpc.aio.insecure_channel(st.target) as a,
            grpc.aio.insecure_channel(st.target) as b,
        ):
            sa, sb = Stubs(a), Stubs(b)
            return await asyncio.gather(
                *(client(sa if i % 2 else sb, i, x) for i, x in enumerate(xs))
            )

    reg = st.srv.metrics.registry
    batches_before = reg.get_sample_value("guard_batch_size_count")
    out = run(go())

    for i, (x, got) in enumerate(zip(xs, out)):
        assert len(got["prediction"]) == len(x), i
        for j in range(len(x)):  # one by one, straight through the guard
            s = guard.score(x[j : j + 1])
            d = guard.decide(s)
            assert got["prediction"][j] == s.pred[0], (i, j)
            assert got["flags"][j] == d.flags[0], (i, j)
            np.testing.assert_allclose(
                got["margin_min"][j], s.d_min[0], rtol=1e-6, err_msg=f"client {i} image {j}"
            )
            np.testing.assert_allclose(
                got["hull_distance"][j],
                s.hull_upper[0],
                rtol=1e-6,
                atol=1e-7,
                err_msg=f"client {i} image {j}",
            )

    n_images = sum(len(x) for x in xs)
    batches = reg.get_sample_value("guard_batch_size_count") - batches_before
    ones = reg.get_sample_value("guard_batch_size_bucket", {"le": "1.0"})
    total = reg.get_sample_value("guard_batch_size_count")
    assert reg.get_sample_value("guard_images_total") == n_images  # the self-check is no request
    assert total - ones > 0, "no batch had more than one image: nothing was merged"
    assert batches < N_CLIENTS, f"{batches} batches for {N_CLIENTS} requests: nothing merged"
    assert reg.get_sample_value("guard_queue_seconds_count") == N_CLIENTS
    assert (
        reg.get_sample_value("guard_requests_total", {"rpc": "ModelInfer", "outcome": "ok"})
        == N_CLIENTS * 3 // 4
    )
    assert (
        reg.get_sample_value("guard_requests_total", {"rpc": "Classify", "outcome": "ok"})
        == N_CLIENTS // 4
    )


def test_batches_never_exceed_max_batch_size(make_server, guard):
    st = make_server(max_queue_delay_ms=50.0, max_batch_size=4)
    st.slow_down(0.0)  # records the batch sizes
    xs = [images(2, seed=300 + i) for i in range(10)]

    async def go():
        async with grpc.aio.insecure_channel(st.target) as ch:
            s = Stubs(ch)
            return await asyncio.gather(
                *(s.oip.ModelInfer(infer_request(x, outputs=["prediction"])) for x in xs)
            )

    out = run(go())
    for x, resp in zip(xs, out):
        np.testing.assert_array_equal(decode(resp)["prediction"], guard.score(x).pred)
    assert sum(st.batches) == 20
    assert max(st.batches) == 4  # merged, but never past the limit


def test_mixed_sizes_never_exceed_max_batch_size(make_server, guard):
    """Requests of 3 images with max_batch_size=4: merging two would make a batch of 6; the
    request of 6 images runs in chunks that fill the batches."""
    st = make_server(max_queue_delay_ms=50.0, max_batch_size=4, slow_s=0.05)
    xs = [images(3, seed=500 + i) for i in range(4)] + [images(6, seed=510)]  # one > limit

    async def go():
        async with grpc.aio.insecure_channel(st.target) as ch:
            s = Stubs(ch)
            return await asyncio.gather(
                *(
                    s.oip.ModelInfer(infer_request(x, outputs=["prediction", "hull_distance"]))
                    for x in xs
                )
            )

    out = run(go())
    for x, resp in zip(xs, out):
        got, want = decode(resp), expected(guard, x)
        np.testing.assert_array_equal(got["prediction"], want["prediction"])
        np.testing.assert_allclose(got["hull_distance"], want["hull_distance"], rtol=1e-6)
    assert sum(st.batches) == 18 and max(st.batches) == 4  # the 6-image request is split
