"""The client of the upstream model server (upstream mode): one Open Inference Protocol
``ModelInfer`` per merged batch, asking for the logits and the features, over ``grpc.aio`` with
the stubs generated from ``proto/`` (:mod:`server.grpc.gen`), plus the readiness probes.

Failures become this server's errors (:mod:`server.errors`), with the upstream's own status and
message in the text: its deadline (``upstream_timeout_s``) ->
:class:`~server.errors.UpstreamTimeout`; ``INVALID_ARGUMENT`` (it does not take the artifact's
input, or lacks the requested outputs) or an answer without the requested outputs ->
:class:`~server.errors.UpstreamMismatch`; any other status (``UNAVAILABLE``: down or
unreachable; overloaded, no such model, ...) -> :class:`~server.errors.UpstreamUnavailable`.
Every forwarded batch is timed (``guard_upstream_seconds``) and every failed one counted by its
status (``guard_upstream_errors_total{code}``).

The channel reconnects by itself: its reconnect backoff is capped at one second, so a model
server that comes back is reached again within about a second, without a restart; calls made
while it is down fail at once (no ``wait_for_ready``), never hang.
"""

from __future__ import annotations

import logging
import time

import grpc
import numpy as np

from ..errors import UpstreamError, UpstreamMismatch, UpstreamTimeout, UpstreamUnavailable, echo
from ..grpc.gen.inference import grpc_service_pb2 as pb
from ..grpc.gen.inference import grpc_service_pb2_grpc as pb_grpc
from ..metrics import Metrics

log = logging.getLogger(__name__)

#: Output datatypes the client reads (converted to float32).
_DTYPES = {"FP32": np.float32, "FP64": np.float64, "FP16": np.float16}
_TYPED = {"FP32": "fp32_contents", "FP64": "fp64_contents"}
#: Longest the readiness probes wait.
PROBE_TIMEOUT_S = 2.0


class UpstreamClient:
    """ModelInfer / ServerReady / ModelReady against ``target`` (``HOST:PORT``) for ``model``.

    ``await start()`` (in the event loop that will use it) before the first call.
    """

    def __init__(
        self,
        target: str,
        model: str,
        *,
        timeout_s: float = 10.0,
        max_message_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        self.target = target
        self.model = model
        self.timeout_s = timeout_s
        self.max_message_bytes = max_message_bytes
        self._channel: grpc.aio.Channel | None = None
        self._stub: pb_grpc.GRPCInferenceServiceStub | None = None

    async def start(self) -> None:
        self._channel = grpc.aio.insecure_channel(
            self.target,
            options=[
                ("grpc.max_receive_message_length", self.max_message_bytes),
                ("grpc.max_send_message_length", self.max_message_bytes),
                # reach a model server that came back within ~1 s (the default backoff grows
                # to 2 minutes)
                ("grpc.initial_reconnect_backoff_ms", 100),
                ("grpc.min_reconnect_backoff_ms", 100),
                ("grpc.max_reconnect_backoff_ms", 1000),
            ],
        )
        self._stub = pb_grpc.GRPCInferenceServiceStub(self._channel)

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = self._stub = None

    @property
    def stub(self) -> pb_grpc.GRPCInferenceServiceStub:
        if self._stub is None:
            raise UpstreamUnavailable(f"upstream {self.target}: the client is not started")
        return self._stub

    def describe(self) -> str:
        return f"upstream {self.target} (model {self.model!r})"

    # ---------------------------------------------------------------- inference
    async def infer(
        self,
        x: np.ndarray,
        input_name: str,
        outputs: tuple[str, ...],
        metrics: Metrics | None = None,
    ) -> dict[str, np.ndarray]:
        """``outputs`` of the upstream model on ``x`` (B, ...) float32, each (B, ...) float32.

        ``metrics``: where the call is timed and a failure counted (None: nowhere, e.g. the
        self-checks)."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        request = pb.ModelInferRequest(
            model_name=self.model,
            inputs=[
                pb.ModelInferRequest.InferInputTensor(
                    name=input_name, datatype="FP32", shape=list(x.shape)
                )
            ],
            outputs=[pb.ModelInferRequest.InferRequestedOutputTensor(name=n) for n in outputs],
            raw_input_contents=[x.tobytes()],
        )
        t0 = time.perf_counter()
        try:
            response = await self.stub.ModelInfer(request, timeout=self.timeout_s)
            return self._outputs(response, outputs, len(x))
        except grpc.aio.AioRpcError as exc:
            error = self._error(exc)
            if metrics is not None:
                metrics.upstream_errors.labels(code=exc.code().name).inc()
            raise error from None
        except UpstreamError:
            if metrics is not None:
                metrics.upstream_errors.labels(code="FAILED_PRECONDITION").inc()
            raise
        finally:
            if metrics is not None:
                metrics.upstream_seconds.observe(time.perf_counter() - t0)

    def _error(self, exc: grpc.aio.AioRpcError) -> UpstreamError:
        code = exc.code()
        details = echo(exc.details() or "", 300)
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return UpstreamTimeout(
                f"{self.describe()} did not answer within {self.timeout_s:g} s "
                f"(upstream_timeout_s): {details}"
            )
        if code == grpc.StatusCode.INVALID_ARGUMENT:  # our request is valid for the artifact
            return UpstreamMismatch(
                f"{self.describe()} refused the batch: INVALID_ARGUMENT: {details}: it does not "
                f"serve the artifact's model as `guard export triton` writes it"
            )
        return UpstreamUnavailable(f"{self.describe()} failed: {code.name}: {details}")

    def _outputs(
        self, response: pb.ModelInferResponse, names: tuple[str, ...], n: int
    ) -> dict[str, np.ndarray]:
        raw = response.raw_output_contents
        got: dict[str, np.ndarray] = {}
        for i, t in enumerate(response.outputs):
            if t.name not in names:
                continue
            if t.datatype not in _DTYPES:
                raise UpstreamMismatch(
                    f"{self.describe()} answered output {t.name!r} as {t.datatype}; expected FP32"
                )
            if raw:
                if i >= len(raw):
                    raise UpstreamMismatch(f"{self.describe()}: output {t.name!r} has no data")
                values = np.frombuffer(raw[i], dtype=_DTYPES[t.datatype])
            elif t.datatype in _TYPED:
                values = np.asarray(getattr(t.contents, _TYPED[t.datatype]), _DTYPES[t.datatype])
            else:
                raise UpstreamMismatch(f"{self.describe()}: output {t.name!r} has no data")
            shape = tuple(t.shape)
            if not shape or shape[0] != n or int(np.prod(shape)) != values.size:
                raise UpstreamMismatch(
                    f"{self.describe()} answered output {t.name!r} with shape {list(shape)} "
                    f"and {values.size} values for a batch of {n}"
                )
            got[t.name] = values.reshape(shape).astype(np.float32, copy=False)
        missing = [name for name in names if name not in got]
        if missing:
            raise UpstreamMismatch(
                f"{self.describe()} did not answer the outputs {missing} (it answered "
                f"{[t.name for t in response.outputs]}): serve the model written by "
                f"`guard export triton`, which adds them"
            )
        return got

    # ---------------------------------------------------------------- readiness
    async def ready(self) -> tuple[bool, str]:
        """(ready, why not): the upstream server and its model are ready."""
        timeout = min(PROBE_TIMEOUT_S, self.timeout_s)
        try:
            server = await self.stub.ServerReady(pb.ServerReadyRequest(), timeout=timeout)
            if not server.ready:
                return False, f"upstream {self.target} is not ready"
            model = await self.stub.ModelReady(
                pb.ModelReadyRequest(name=self.model), timeout=timeout
            )
            if not model.ready:
                return False, f"{self.describe()} is not ready (or not loaded)"
        except grpc.aio.AioRpcError as exc:
            return False, f"upstream {self.target}: {exc.code().name}: {echo(exc.details(), 300)}"
        except UpstreamError as exc:
            return False, str(exc)
        return True, ""
