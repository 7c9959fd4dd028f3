"""Graceful shutdown: in-flight requests finish, new ones are refused, and ``python -m server``
exits 0 on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import pytest

from guard import save_artifact
from server.grpc.gen.inference import grpc_service_pb2 as pb
from server.grpc.gen.inference import grpc_service_pb2_grpc as pb_grpc

from .helpers import Stubs, assert_outputs_match, decode, expected, images, infer_request, run

ROOT = Path(__file__).resolve().parents[2]


def test_stop_lets_in_flight_requests_finish(make_server, guard):
    st = make_server(slow_s=0.5, max_queue_delay_ms=0.0)
    xs = [images(1 + i % 3, seed=400 + i) for i in range(5)]
    received: list[int] = []
    dataplane = st.srv.dataplane
    submit = dataplane.submit

    async def counting_submit(x):
        received.append(len(x))
        return await submit(x)

    dataplane.submit = counting_submit

    async def go():
        async with grpc.aio.insecure_channel(st.target) as ch:
            s = Stubs(ch)
            in_flight = [asyncio.ensure_future(s.oip.ModelInfer(infer_request(x))) for x in xs]
            # every request has reached the batcher and the first batch is running (sleeping)
            while len(received) < len(xs) or not st.batches:
                await asyncio.sleep(0.01)
            t0 = time.perf_counter()
            stopping = st.submit(st.srv.stop(grace=5))
            while st.srv.ready:
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.1)  # stop() has reached server.stop(grace)
            late_codes = []
            for target_ch in (ch, None):  # the open channel, and a brand-new connection
                try:
                    if target_ch is None:
                        async with grpc.aio.insecure_channel(st.target) as ch2:
                            await Stubs(ch2).oip.ModelInfer(infer_request(xs[0]), timeout=5)
                    else:
                        await s.oip.ModelInfer(infer_request(xs[0]), timeout=5)
                    late_codes.append(grpc.StatusCode.OK)
                except grpc.aio.AioRpcError as exc:
                    late_codes.append(exc.code())
            results = await asyncio.gather(*in_flight, return_exceptions=True)
            await asyncio.wrap_future(stopping)
            return results, late_codes, time.perf_counter() - t0, stopping

    results, late_codes, elapsed, stopping = run(go())
    for x, r in zip(xs, results):
        assert not isinstance(r, BaseException), r
        assert_outputs_match(decode(r), expected(guard, x))
    assert late_codes == [grpc.StatusCode.UNAVAILABLE] * 2, late_codes
    assert stopping.done() and stopping.exception() is None
    assert elapsed < 4.0  # stop() returned once the in-flight work was done, not at the grace
    assert st.srv._stopped.is_set()
    assert not st.srv.ready


def test_stop_is_idempotent(make_server):
    st = make_server()
    st.call(st.srv.stop(grace=0))
    st.call(st.srv.stop(grace=0))  # a second stop (e.g. a second SIGTERM) is a no-op
    st.call(st.srv.wait(), timeout=2)


def _read_lines(stream, q: queue.Queue) -> None:
    for line in stream:
        q.put(line)
    q.put(None)


@pytest.fixture()
def artifact(guard, tmp_path):
    return save_artifact(guard, tmp_path / "tiny")


class ServerProcess:
    """``python -m server`` on the saved artifact, announced port parsed from its stdout."""

    def __init__(self, artifact: Path, log: Path, *extra: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GUARD_")}
        env["PYTHONUNBUFFERED"] = "1"
        self.log = log
        with open(log, "w") as err:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "server",
                    "--artifact",
                    str(artifact),
                    "--port",
                    "0",
                    "--host",
                    "127.0.0.1",
                    *extra,
                ],
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
                env=env,
            )
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(
            target=_read_lines, args=(self.proc.stdout, self.lines), daemon=True
        ).start()

    def wait_serving(self, timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                pytest.fail(f"no 'serving' line within {timeout} s: {self.log.read_text()}")
            if line is None:
                pytest.fail(f"the server exited ({self.proc.wait()}): {self.log.read_text()}")
            if "serving" in line:
                return line

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def test_sigterm_exits_zero(artifact, tmp_path, guard):
    sp = ServerProcess(artifact, tmp_path / "stderr.log", "--metrics-port", "-1", "--grace-s", "5")
    try:
        line = sp.wait_serving()
        m = re.search(r"'tiny' on 127\.0\.0\.1:(\d+) ", line)
        assert m, line
        port = int(m.group(1))
        assert port > 0
        assert "metrics off" in line, line

        # it really serves, under the artifact directory's name
        x = images(2, seed=9)
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            stub = pb_grpc.GRPCInferenceServiceStub(ch)
            assert stub.ServerReady(pb.ServerReadyRequest(), timeout=10).ready
            req = infer_request(x, model="tiny", outputs=["prediction", "hull_distance"])
            got = decode(stub.ModelInfer(req, timeout=10))
        np.testing.assert_array_equal(got["prediction"], expected(guard, x)["prediction"])

        t0 = time.monotonic()
        sp.proc.send_signal(signal.SIGTERM)
        rc = sp.proc.wait(timeout=10)
        assert rc == 0, sp.log.read_text()
        assert time.monotonic() - t0 < 5.0
    finally:
        sp.kill()


def test_sigterm_right_after_serving_line_exits_zero(artifact, tmp_path):
    """The signal handlers are installed before the server announces itself."""
    sp = ServerProcess(artifact, tmp_path / "stderr.log", "--metrics-port", "0")
    try:
        line = sp.wait_serving()
        sp.proc.send_signal(signal.SIGTERM)
        rc = sp.proc.wait(timeout=10)
        assert rc == 0, (rc, sp.log.read_text())
        assert re.search(r"metrics http://127\.0\.0\.1:\d+/metrics", line), line
    finally:
        sp.kill()
