"""Shared fixtures for the server tests.

pytest-asyncio is not installed, so asyncio is driven by hand: every server runs in a background
thread with its own event loop (:class:`tests.server.helpers.ServerThread`), and tests talk to it
from their own ``asyncio.run(...)`` (grpc.aio clients) or synchronously (tritonclient, which
shares the process: our generated code registers its protos in a private descriptor pool).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from guard import Guard, OnnxClassifier
from server.settings import Settings
from tests.guard import onnx_builders as ob

from .helpers import ServerThread


@pytest.fixture(scope="session")
def guard() -> Guard:
    """A calibrated guard for the tiny ONNX classifier: input [N, 1, 6, 6], 5 classes."""
    built = ob.gemm_transb1()
    x = ob.random_inputs(1200, seed=0)
    return Guard(hull_k=16).fit(OnnxClassifier(built.data), x)


@pytest.fixture(scope="session")
def server(guard: Guard) -> Iterator[ServerThread]:
    """One shared server (default batching) with metrics and HTTP endpoints on free ports."""
    st = ServerThread(guard, Settings(port=0, metrics_port=0, http_port=0))
    yield st
    st.stop()


@pytest.fixture()
def make_server(guard: Guard) -> Iterator[Callable[..., ServerThread]]:
    """Factory for servers with custom settings; all are stopped at the end of the test."""
    started: list[ServerThread] = []

    def make(slow_s: float = 0.0, **settings: object) -> ServerThread:
        kw = {"port": 0, "metrics_port": -1, "http_port": -1}
        kw.update(settings)
        st = ServerThread(guard, Settings(**kw), slow_s=slow_s)
        started.append(st)
        return st

    yield make
    for st in started:
        if not st.srv._stopped.is_set():
            st.stop(grace=0)
        else:
            st._close_loop()
