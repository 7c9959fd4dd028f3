"""Helpers shared by the server tests: a server on a background event loop, request builders
for our own generated stubs, and a Prometheus text scraper."""

from __future__ import annotations

import asyncio
import re
import threading
import time
import urllib.request

import grpc
import numpy as np

from guard import Guard
from server.app import GuardServer
from server.grpc.gen.guard_v1 import guard_pb2 as gpb
from server.grpc.gen.guard_v1 import guard_pb2_grpc as gpb_grpc
from server.grpc.gen.inference import grpc_service_pb2 as pb
from server.grpc.gen.inference import grpc_service_pb2_grpc as pb_grpc
from server.settings import Settings
from tests.guard import onnx_builders as ob

MODEL = "tiny"
INPUT_NAME = "x"
TIMEOUT = 30.0


class ServerThread:
    """A :class:`GuardServer` running on its own event loop in a daemon thread."""

    def __init__(
        self, guard: Guard, settings: Settings, model_name: str = MODEL, slow_s: float = 0.0
    ) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(
            target=self.loop.run_forever, daemon=True, name="guard-test-server"
        )
        self.thread.start()
        self.batches: list[int] = []  # sizes of the batches run (when slowed or recorded)

        async def make() -> GuardServer:
            srv = GuardServer(settings, guard, model_name)
            await srv.start()
            return srv

        try:
            self.srv: GuardServer = self.call(make())
        except BaseException:
            self._close_loop()
            raise
        if slow_s:
            self.slow_down(slow_s)

    def call(self, coro, timeout: float = TIMEOUT):
        """Run ``coro`` on the server's loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def submit(self, coro):
        """Start ``coro`` on the server's loop; returns a concurrent.futures.Future."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def slow_down(self, seconds: float) -> None:
        """Make every batch take at least ``seconds`` (wraps the batcher's run function)."""
        batcher = self.srv.dataplane.batcher
        run = batcher._run

        def slow(x: np.ndarray):
            self.batches.append(len(x))
            time.sleep(seconds)
            return run(x)

        batcher._run = slow

    @property
    def port(self) -> int:
        return self.srv.port

    @property
    def metrics_port(self) -> int:
        return self.srv.metrics_port

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def http_port(self) -> int:
        return self.srv.http_port

    @property
    def http_url(self) -> str:
        """``host:port`` of the HTTP/REST endpoint (what tritonclient.http takes)."""
        return f"127.0.0.1:{self.http_port}"

    def stop(self, grace: float | None = 1.0) -> None:
        try:
            self.call(self.srv.stop(grace))
        finally:
            self._close_loop()

    def _close_loop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(TIMEOUT)
        if not self.thread.is_alive():
            self.loop.close()


def images(n: int, seed: int) -> np.ndarray:
    return ob.random_inputs(n, seed=seed)


# ---------------------------------------------------------------- Prometheus text scraping
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def scrape(metrics_port: int) -> dict[tuple[str, frozenset], float]:
    """``/metrics`` as ``{(name, frozenset(labels.items())): value}``."""
    url = f"http://localhost:{metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as resp:
        text = resp.read().decode()
    out: dict[tuple[str, frozenset], float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        assert m, line
        labels = frozenset(_LABEL.findall(m.group(2) or ""))
        out[(m.group(1), labels)] = float(m.group(3))
    return out


def sample(samples: dict, name: str, **labels: str) -> float:
    """One sample's value (0 when the labelled child does not exist yet)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


# ---------------------------------------------------------------- requests (our own stubs)
def infer_request(
    x: np.ndarray | None = None,
    *,
    model: str = MODEL,
    name: str = INPUT_NAME,
    datatype: str = "FP32",
    shape: list[int] | None = None,
    raw: bytes | None = None,
    outputs: list[str] = (),
    typed: bool = False,
) -> pb.ModelInferRequest:
    """An OIP request with one input (raw bytes by default, ``typed`` for ``contents``)."""
    req = pb.ModelInferRequest(model_name=model)
    if x is not None or shape is not None:
        shape = list(x.shape) if shape is None else shape
        t = req.inputs.add(name=name, datatype=datatype, shape=shape)
        if typed:
            t.contents.fp32_contents.extend(np.asarray(x, np.float32).ravel().tolist())
        else:
            if raw is None:
                raw = np.ascontiguousarray(x).tobytes()
            req.raw_input_contents.append(raw)
    for o in outputs:
        req.outputs.add(name=o)
    return req


_NUMPY = {"FP32": "<f4", "INT64": "<i8", "INT32": "<i4", "BOOL": "?"}


def decode(resp: pb.ModelInferResponse) -> dict[str, np.ndarray]:
    """Response outputs as numpy arrays, by name."""
    out = {}
    for o, raw in zip(resp.outputs, resp.raw_output_contents, strict=True):
        out[o.name] = np.frombuffer(raw, dtype=_NUMPY[o.datatype]).reshape(list(o.shape))
    return out


def classify_request(x: np.ndarray, model: str = "") -> gpb.ClassifyRequest:
    return gpb.ClassifyRequest(
        model_name=model,
        images=gpb.Tensor(
            datatype="FP32", shape=list(x.shape), raw=np.ascontiguousarray(x, "<f4").tobytes()
        ),
    )


class Stubs:
    """Both services' stubs on one grpc.aio channel (use inside a running event loop)."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.channel = channel
        self.oip = pb_grpc.GRPCInferenceServiceStub(channel)
        self.guard = gpb_grpc.GuardServiceStub(channel)


async def expect_error(call, code: grpc.StatusCode) -> str:
    """Await ``call`` (an awaitable RPC); it must fail with ``code``; returns the details."""
    try:
        await call
    except grpc.aio.AioRpcError as exc:
        assert exc.code() == code, (exc.code(), exc.details())
        return exc.details() or ""
    raise AssertionError(f"expected {code}, the call succeeded")


def run(coro):
    """Drive a client coroutine on a fresh event loop (no pytest-asyncio here)."""
    return asyncio.run(coro)


def expected(guard: Guard, x: np.ndarray) -> dict[str, np.ndarray]:
    """What the server should answer for ``x``, computed directly with the guard."""
    s = guard.score(x)
    d = guard.decide(s)
    return {
        "logits": s.logits,
        "prediction": s.pred,
        "abstain": d.abstain,
        "flags": d.flags,
        "margin_min": s.d_min,
        "nearest_class": s.nearest_class,
        "hull_distance": s.hull_upper,
        "hull_lower": s.hull_lower,
        "ambiguity": s.ambiguity,
        "in_union": s.in_union,
        "margins": s.margins,
        "support_indices": s.support_idx,
        "support_weights": s.support_alpha,
        "reasons": d.reasons,
        "adversarial": d.adversarial,
        "n_balls": s.n_balls,
        "union_slack": s.union_slack,
        "ood_score": s.ood_score,
        "p_value": s.p_value,
        "sphere_distance": s.sphere_upper,
        "sphere_lower": s.sphere_lower,
    }


FLOAT_OUTPUTS = (
    "logits",
    "margin_min",
    "hull_distance",
    "hull_lower",
    "ambiguity",
    "margins",
    "support_weights",
    "ood_score",
    "p_value",
    "sphere_distance",
    "sphere_lower",
)


def assert_outputs_match(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    """Server outputs equal the guard's own values (to float32 precision)."""
    for name, arr in got.items():
        ref = np.asarray(want[name])
        assert arr.shape == ref.shape, (name, arr.shape, ref.shape)
        if name in FLOAT_OUTPUTS:
            np.testing.assert_allclose(
                arr, ref.astype(np.float32), rtol=1e-6, atol=1e-6, equal_nan=True, err_msg=name
            )
        else:
            np.testing.assert_array_equal(arr, ref.astype(arr.dtype), err_msg=name)
