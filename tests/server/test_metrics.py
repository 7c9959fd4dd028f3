"""Prometheus metrics: scrape /metrics over HTTP before and after some requests."""

from __future__ import annotations

import urllib.error
import urllib.request

import grpc
import numpy as np
import pytest

from server.grpc.gen.guard_v1 import guard_pb2 as gpb

from .helpers import Stubs, decode, expect_error, images, infer_request, run, sample, scrape

HISTOGRAMS_PER_IMAGE = ("guard_ambiguity", "guard_margin_min", "guard_hull_distance")


def test_metrics_count_requests_images_and_decisions(server):
    # plain random images (some ambiguous) and scaled ones (far from the training hull)
    batches = [
        images(1, seed=1),
        images(3, seed=2),
        6.0 * images(2, seed=3),
        images(2, seed=4),
        8.0 * images(1, seed=5),
    ]
    n_images = sum(len(x) for x in batches)

    async def go(s: Stubs):
        outs = []
        for x in batches:  # one at a time: one request = one batch
            outs.append(
                decode(
                    await s.oip.ModelInfer(
                        infer_request(x, outputs=["flags", "abstain", "margin_min"])
                    )
                )
            )
        for bad in (
            infer_request(np.full((1, 1, 6, 6), np.nan, np.float32)),
            infer_request(images(1, seed=0), shape=[1, 36]),
            infer_request(images(1, seed=0), outputs=["nope"]),
        ):
            await expect_error(s.oip.ModelInfer(bad), grpc.StatusCode.INVALID_ARGUMENT)
        await expect_error(
            s.oip.ModelInfer(infer_request(images(1, seed=0), model="zz")),
            grpc.StatusCode.NOT_FOUND,
        )
        return outs

    before = scrape(server.metrics_port)
    outs = run(_stubs(server.target, go))
    after = scrape(server.metrics_port)

    def delta(name: str, **labels: str) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    req = "guard_requests_total"
    assert delta(req, rpc="ModelInfer", outcome="ok") == len(batches)
    assert delta(req, rpc="ModelInfer", outcome="invalid_argument") == 3
    assert delta(req, rpc="ModelInfer", outcome="not_found") == 1
    assert delta(req, rpc="Classify", outcome="ok") == 0
    assert delta("guard_images_total") == n_images
    assert delta("guard_batch_size_count") == len(batches)
    assert delta("guard_batch_size_sum") == n_images
    assert delta("guard_batch_size_bucket", le="1.0") == sum(len(x) == 1 for x in batches)
    assert delta("guard_queue_seconds_count") == len(batches)
    assert delta("guard_model_seconds_count") == len(batches)
    assert delta("guard_geometry_seconds_count") == len(batches)

    margin_min = np.concatenate([o["margin_min"] for o in outs])
    assert np.isfinite(margin_min).all()
    for h in HISTOGRAMS_PER_IMAGE:
        assert delta(h + "_count") == n_images, h
        assert delta(h + "_bucket", le="+Inf") == n_images, h

    flags = np.concatenate([o["flags"] for o in outs])
    abstain = np.concatenate([o["abstain"] for o in outs])
    assert abstain.any() and (flags & 2).any()  # the test exercises abstentions and OOD
    assert delta("guard_abstentions_total", reason="ood") == np.count_nonzero(flags & 2)
    # with the combined OOD score only "ood" makes the guard abstain; "ambiguous" is reported
    assert delta("guard_abstentions_total", reason="ambiguous") == 0
    assert delta("guard_flags_total", flag="ood") == np.count_nonzero(flags & 2)
    assert delta("guard_flags_total", flag="ambiguous") == np.count_nonzero(flags & 4)
    assert delta("guard_flags_total", flag="adversarial") == np.count_nonzero(flags & 1)
    assert delta("guard_abstentions_total", reason="adversarial") == 0  # a flag, not abstention
    # every abstaining image has at least one abstention reason, and only those do
    assert np.array_equal(abstain, (flags & 2) != 0)


def test_metrics_endpoint_is_prometheus_text(server):
    import urllib.request

    with urllib.request.urlopen(
        f"http://localhost:{server.metrics_port}/metrics", timeout=10
    ) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain")
        text = resp.read().decode()
    for name in (
        "guard_requests_total",
        "guard_images_total",
        "guard_batch_size",
        "guard_ambiguity",
        "guard_margin_min",
        "guard_hull_distance",
        "guard_queue_seconds",
    ):
        assert f"# TYPE {name} " in text, name


@pytest.mark.parametrize(
    "path", ["/", "/v2/health/ready", "/metrics/", "/metricsx", "/favicon.ico"]
)
def test_metrics_port_serves_metrics_only(server, path):
    """Only /metrics answers: a probe pointed at this port by mistake must not read 200."""
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(f"http://localhost:{server.metrics_port}{path}", timeout=10)
    assert err.value.code == 404
    post = urllib.request.Request(
        f"http://localhost:{server.metrics_port}/metrics", data=b"x", method="POST"
    )
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(post, timeout=10)
    assert err.value.code == 405


def test_request_duration_and_process_metrics(server):
    n = 4
    before = scrape(server.metrics_port)

    async def go(s: Stubs):
        for i in range(n):
            await s.oip.ModelInfer(infer_request(images(1, seed=i), outputs=["prediction"]))
        await expect_error(
            s.oip.ModelInfer(infer_request(images(1, seed=0), model="zz")),
            grpc.StatusCode.NOT_FOUND,
        )
        await s.guard.GetInfo(gpb.InfoRequest())

    run(_stubs(server.target, go))
    after = scrape(server.metrics_port)

    def delta(name: str, **labels: str) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    h = "guard_request_duration_seconds"
    assert delta(h + "_count", rpc="ModelInfer") == n + 1  # every outcome is timed
    assert delta(h + "_bucket", rpc="ModelInfer", le="+Inf") == n + 1
    assert 0 < delta(h + "_sum", rpc="ModelInfer") < 30
    assert delta(h + "_count", rpc="GetInfo") == 1
    assert sample(after, "process_resident_memory_bytes") > 0
    assert sample(after, "process_cpu_seconds_total") > 0
    assert sample(after, "process_open_fds") > 0
    assert any(name == "python_info" for name, _ in after)


async def _stubs(target: str, fn):
    async with grpc.aio.insecure_channel(target) as ch:
        return await fn(Stubs(ch))
