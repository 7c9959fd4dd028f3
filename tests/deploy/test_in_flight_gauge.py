"""``guard_in_flight_requests``, the load signal of the autoscaler (deploy/k8s/base/hpa.yaml): the
requests in the data plane, over both transports, back to 0 once they are answered."""

from __future__ import annotations

import concurrent.futures
import time

import numpy as np
import pytest
import tritonclient.grpc as tc
import tritonclient.http as th

from guard import Guard, OnnxClassifier
from server.settings import Settings
from tests.guard import onnx_builders as ob
from tests.server.helpers import MODEL, ServerThread, sample, scrape

from .helpers import wait_for


@pytest.fixture(scope="module")
def slow_server():
    """The tiny classifier's guard behind a server whose batches take 0.5 s each."""
    guard = Guard(hull_k=16).fit(
        OnnxClassifier(ob.gemm_transb1().data), ob.random_inputs(1200, seed=0)
    )
    st = ServerThread(
        guard, Settings(port=0, http_port=0, metrics_port=0, max_batch_size=4), slow_s=0.5
    )
    yield st
    st.stop()


def in_flight(st: ServerThread) -> float:
    return sample(scrape(st.metrics_port), "guard_in_flight_requests")


def test_gauge_counts_requests_in_the_data_plane(slow_server: ServerThread) -> None:
    st = slow_server
    assert in_flight(st) == 0
    x = ob.random_inputs(4, seed=3).astype(np.float32)
    grpc_client = tc.InferenceServerClient(st.target)

    def grpc_call():
        inp = tc.InferInput("x", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        return grpc_client.infer(MODEL, [inp]).as_numpy("prediction")

    def http_call():  # a client per thread: tritonclient.http's is not thread-safe
        client = th.InferenceServerClient(st.http_url)
        try:
            inp = th.InferInput("x", list(x.shape), "FP32")
            inp.set_data_from_numpy(x)
            return client.infer(MODEL, [inp]).as_numpy("prediction")
        finally:
            client.close()

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        # 4 requests of 4 images, batches of at most 4 images taking 0.5 s each: at least three
        # of them wait while the first runs
        futures = [pool.submit(f) for f in (grpc_call, grpc_call, http_call, http_call)]
        peak = wait_for("4 requests in flight", lambda: in_flight(st) == 4, timeout=10, every=0.05)
        assert peak
        answers = [f.result(timeout=30) for f in futures]
    assert all(len(a) == 4 for a in answers)
    # back to 0 once answered (scraped right after the last response)
    deadline = time.monotonic() + 5
    while in_flight(st) != 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert in_flight(st) == 0
    grpc_client.close()
