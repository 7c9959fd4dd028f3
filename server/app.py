"""The gRPC server: loads the artifact, self-checks, serves OIP + guard.v1 + health +
reflection, exposes Prometheus metrics, and shuts down gracefully on SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path

import grpc
import numpy as np
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

import server.gen  # noqa: F401
from guard import Guard, load_artifact
from guard.errors import InputError
from guard_v1 import guard_pb2, guard_pb2_grpc
from inference import grpc_service_pb2, grpc_service_pb2_grpc

from .batcher import Batcher
from .errors import ModelNotFound
from .metrics import Metrics
from .pipeline import BatchResult, Pipeline
from .servicers import GuardServicer, InferenceServicer
from .settings import Settings

log = logging.getLogger("guard.server")

SERVICES = (
    grpc_service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name,
    guard_pb2.DESCRIPTOR.services_by_name["GuardService"].full_name,
)
DEFAULT_ARTIFACT = Path("artifacts/fmnist_resnet")


def load_guard(settings: Settings) -> tuple[Guard, str]:
    """The guard to serve and its model name (the built-in default when no artifact is set)."""
    if settings.artifact:
        path = Path(settings.artifact)
        guard = load_artifact(path, device=settings.device)
    else:
        from guard.defaults import default_guard

        path = DEFAULT_ARTIFACT
        guard = default_guard(path, device=settings.device)
    if guard.model_ is None:
        raise InputError(f"artifact {path} has no model (fitted from features); refit it with "
                         f"`guard fit --model ...` to serve it")
    return guard, settings.model_name or path.resolve().name


class GuardServer:
    """One served model. ``await start()``, then ``await wait()`` or ``await stop()``."""

    def __init__(self, settings: Settings, guard: Guard | None = None,
                 model_name: str | None = None) -> None:
        self.settings = settings
        if guard is None:
            guard, model_name = load_guard(settings)
        self.guard = guard
        self.model_name = model_name or settings.model_name or "model"
        self.input_name = guard.model_.input_name
        self.metrics = Metrics()
        self.ready = False
        self.port = 0
        self.metrics_port = -1
        self._health = health.aio.HealthServicer()
        self._batcher: Batcher | None = None
        self._server: grpc.aio.Server | None = None
        self._stopped = asyncio.Event()

    # ---------------------------------------------------------------- helpers for servicers
    def check_model(self, name: str, allow_empty: bool = False) -> None:
        if name == self.model_name or (allow_empty and not name):
            return
        raise ModelNotFound(f"unknown model {name!r}; this server serves {self.model_name!r}")

    async def submit(self, x: np.ndarray) -> BatchResult:
        assert self._batcher is not None
        return await self._batcher.submit(x)

    # ---------------------------------------------------------------- lifecycle
    async def start(self) -> int:
        s = self.settings
        opts = [("grpc.max_receive_message_length", s.max_message_bytes),
                ("grpc.max_send_message_length", s.max_message_bytes)]
        self._server = grpc.aio.server(options=opts)
        grpc_service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(
            InferenceServicer(self), self._server)
        guard_pb2_grpc.add_GuardServiceServicer_to_server(GuardServicer(self), self._server)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)
        reflection.enable_server_reflection(
            SERVICES + (health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                        reflection.SERVICE_NAME), self._server)
        self.port = self._server.add_insecure_port(f"{s.host}:{s.port}")
        if self.port == 0:
            raise OSError(f"cannot bind {s.host}:{s.port}")
        for name in ("",) + SERVICES:
            await self._health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        pipeline = Pipeline(self.guard, self.metrics, geometry=s.geometry)
        self._batcher = Batcher(pipeline, max_batch_size=s.max_batch_size,
                                max_delay_s=s.max_queue_delay_ms / 1000.0,
                                max_queue=s.max_queue_size,
                                on_queue_time=self.metrics.queue_seconds.observe)
        self._batcher.start()
        await self._server.start()
        await self._self_check()
        if s.metrics_port >= 0:
            self.metrics_port = self.metrics.serve_http(s.metrics_port, s.host)
        for name in ("",) + SERVICES:
            await self._health.set(name, health_pb2.HealthCheckResponse.SERVING)
        self.ready = True
        log.info("serving model %r on port %d (metrics on %s)", self.model_name, self.port,
                 self.metrics_port if self.metrics_port >= 0 else "off")
        return self.port

    async def _self_check(self) -> None:
        """One real inference through the whole path before reporting SERVING."""
        shape = [1] + [d or 1 for d in self.guard.model_.input_shape[1:]]
        result = await self.submit(np.zeros(shape, dtype=np.float32))
        if len(result) != 1 or not np.all(np.isfinite(result.logits)):
            raise RuntimeError("self-check inference failed: non-finite logits")
        if result.scores is not None and not np.isfinite(result.scores.hull_upper).all():
            raise RuntimeError("self-check inference failed: non-finite hull distance")

    async def stop(self, grace: float | None = None) -> None:
        """Stop accepting, let in-flight requests finish (up to ``grace`` s), then shut down."""
        if self._server is None or self._stopped.is_set():
            return
        self.ready = False
        await self._health.enter_graceful_shutdown()
        await self._server.stop(self.settings.grace_s if grace is None else grace)
        if self._batcher is not None:
            await self._batcher.close()
        self.metrics.close()
        self._stopped.set()
        log.info("stopped")

    async def wait(self) -> None:
        await self._stopped.wait()


async def serve(settings: Settings) -> None:
    """Run until SIGTERM / SIGINT, then stop gracefully."""
    srv = GuardServer(settings)
    await srv.start()
    loop = asyncio.get_running_loop()
    # Handlers first, then the announcement: a SIGTERM sent as soon as "serving" is read is
    # already a graceful stop.
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: asyncio.ensure_future(srv.stop()))
    metrics = (f"metrics http://{settings.host}:{srv.metrics_port}/metrics"
               if srv.metrics_port >= 0 else "metrics off")
    print(f"guard: serving {srv.model_name!r} on {settings.host}:{srv.port} "
          f"(gRPC: Open Inference Protocol + guard.v1, health, reflection); {metrics}",
          flush=True)
    await srv.wait()
