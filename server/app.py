"""One served model behind its transports: the data plane, the gRPC transport and the Prometheus
endpoint, started and stopped together from one :class:`~server.settings.Settings`.

Start: bind gRPC (health NOT_SERVING), start the data plane (batcher + self-check inference),
expose metrics, then report SERVING. Stop (SIGTERM / SIGINT under :func:`serve`): not ready,
health NOT_SERVING, new calls refused, in-flight calls finish (up to ``grace_s``), then the
batcher and the metrics endpoint close.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable

from guard import Guard

from .dataplane import DataPlane, ServedModel
from .grpc.server import GrpcServer
from .metrics import Metrics
from .settings import Settings

log = logging.getLogger(__name__)


class GuardServer:
    """``await start()``, then ``await wait()`` or ``await stop()``.

    ``guard`` (with ``model_name``) serves an in-memory guard instead of ``settings.artifact``.
    """

    def __init__(
        self, settings: Settings, guard: Guard | None = None, model_name: str | None = None
    ) -> None:
        s = self.settings = settings
        if guard is None:
            self.model = ServedModel.load(
                s.artifact, name=s.model_name, device=s.device, geometry=s.geometry
            )
        else:
            self.model = ServedModel(
                guard, model_name or s.model_name or "model", geometry=s.geometry
            )
        self.metrics = Metrics()
        self.dataplane = DataPlane(
            self.model,
            self.metrics,
            max_batch_size=s.max_batch_size,
            max_delay_s=s.max_queue_delay_ms / 1000.0,
            max_queue=s.max_queue_size,
        )
        self.grpc = GrpcServer(
            self.dataplane, host=s.host, port=s.port, max_message_bytes=s.max_message_bytes
        )
        self.metrics_port = -1
        self._started = False
        self._stopped = asyncio.Event()

    @property
    def model_name(self) -> str:
        return self.model.name

    @property
    def port(self) -> int:
        return self.grpc.port

    @property
    def ready(self) -> bool:
        return self.dataplane.ready

    async def start(self) -> int:
        """Start everything; returns the gRPC port once the server reports SERVING."""
        s = self.settings
        self._started = True
        await self.grpc.start()
        await self.dataplane.start()
        if s.metrics_port >= 0:
            self.metrics_port = self.metrics.serve_http(s.metrics_port, s.host)
        await self.grpc.set_serving()
        log.info(
            "serving model %r on port %d (metrics on %s)",
            self.model_name,
            self.port,
            self.metrics_port if self.metrics_port >= 0 else "off",
        )
        return self.port

    async def stop(self, grace: float | None = None) -> None:
        """Stop accepting, let in-flight requests finish (up to ``grace`` s), then shut down.
        A second call is a no-op."""
        if not self._started or self._stopped.is_set():
            return
        self.dataplane.ready = False
        await self.grpc.stop(self.settings.grace_s if grace is None else grace)
        await self.dataplane.stop()
        self.metrics.close()
        self._stopped.set()
        log.info("stopped")

    async def wait(self) -> None:
        await self._stopped.wait()


async def serve(
    settings: Settings,
    announce: Callable[[GuardServer], None] = lambda srv: None,
) -> None:
    """Run until SIGTERM / SIGINT, then stop gracefully. ``announce(server)`` is called once it
    serves (after the signal handlers are installed, so an early SIGTERM is already graceful)."""
    srv = GuardServer(settings)
    await srv.start()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: asyncio.ensure_future(srv.stop()))
    announce(srv)
    await srv.wait()
