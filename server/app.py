"""One served model behind its transports: the data plane, the gRPC and HTTP/REST transports and
the Prometheus endpoint, started and stopped together from one :class:`~server.settings.Settings`.

Reload: SIGHUP, ``watch`` (the artifact's ``digest.json`` polled every :data:`WATCH_INTERVAL_S`)
and the repository load RPCs all go through :meth:`DataPlane.load` (verified beside the old model,
swapped between batches; a refused artifact leaves the old one serving).

Start: bind gRPC (health NOT_SERVING), start the data plane (batcher + self-check inference),
expose metrics, then report SERVING. Upstream mode (``settings.upstream``, :mod:`server.upstream`):
the model runs on that model server; the self-check runs through it (a wrong model there refuses
the start), an upstream that is not up yet leaves health NOT_SERVING, and from then on health
follows the upstream (:class:`~server.upstream.monitor.UpstreamMonitor`).

Stop (SIGTERM / SIGINT under :func:`serve`): not ready,
health NOT_SERVING, new calls answered UNAVAILABLE, in-flight calls finish (up to ``grace_s``;
what is still running then is answered UNAVAILABLE), gRPC and HTTP (both drained at once, 503
for HTTP) stop, then the batcher and the metrics endpoint close (see :mod:`server.grpc.server`,
:mod:`server.shutdown`). Under :func:`serve` a second signal
during the stop is logged and ignored, and the process exits 0.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from pathlib import Path

from guard import Guard

from .dataplane import DataPlane, ServedModel
from .dataplane.dataplane import PipelineFactory
from .dataplane.model import DEFAULT_ARTIFACT
from .dataplane.pipeline import Pipeline
from .errors import UpstreamError, UpstreamMismatch
from .grpc.server import GrpcServer
from .http import HttpServer
from .metrics import Metrics
from .security import grpc_credentials, ssl_context, token_auth
from .settings import Settings
from .upstream.client import UpstreamClient
from .upstream.monitor import UpstreamMonitor
from .upstream.pipeline import UpstreamPipeline

log = logging.getLogger(__name__)

#: How often ``watch`` reads the artifact's ``digest.json``.
WATCH_INTERVAL_S = 1.0


class GuardServer:
    """``await start()``, then ``await wait()`` or ``await stop()``.

    ``guard`` (with ``model_name``) serves an in-memory guard instead of ``settings.artifact``.
    """

    def __init__(
        self, settings: Settings, guard: Guard | None = None, model_name: str | None = None
    ) -> None:
        s = self.settings = settings
        # TLS files and tokens are checked before the (slow) model load.
        credentials = grpc_credentials(s)
        #: Bearer-token check shared by every transport (None = auth off).
        self.auth = token_auth(s)
        if guard is None:
            self.model = ServedModel.load(
                s.artifact,
                name=s.model_name,
                device=s.device,
                geometry=s.geometry,
                threads=s.geometry_threads,
            )
        else:
            self.model = ServedModel(
                guard,
                model_name or s.model_name or "model",
                geometry=s.geometry,
                threads=s.geometry_threads,
            )
        self.metrics = Metrics()
        #: Upstream mode: the model server's client and the monitor of its state (else None).
        self.upstream: UpstreamClient | None = None
        self.monitor: UpstreamMonitor | None = None
        self._monitor_task: asyncio.Task[None] | None = None
        pipelines: PipelineFactory = Pipeline
        if s.upstream:
            self.upstream = UpstreamClient(
                s.upstream,
                s.upstream_model or self.model.name,
                timeout_s=s.upstream_timeout_s,
                max_message_bytes=s.max_message_bytes,
            )
            self.monitor = UpstreamMonitor(
                self.upstream,
                self._reference_check,
                self._upstream_changed,
                poll_s=s.upstream_poll_s,
            )
            pipelines = self._upstream_pipeline
        self.dataplane = DataPlane(
            self.model,
            self.metrics,
            max_batch_size=s.max_batch_size,
            max_delay_s=s.max_queue_delay_ms / 1000.0,
            max_queue=s.max_queue_size,
            max_images_per_request=s.max_images_per_request,
            pipelines=pipelines,
        )
        if guard is None:
            self.dataplane.loader = self._load_model
        self._watch_task: asyncio.Task[None] | None = None
        self.grpc = GrpcServer(
            self.dataplane,
            host=s.host,
            port=s.port,
            max_message_bytes=s.max_message_bytes,
            credentials=credentials,
            auth=self.auth,
            reflection=s.reflection_on,
        )
        #: The HTTP/REST transport over the same data plane (None: ``http_port`` -1).
        self.http = (
            HttpServer(
                self.dataplane,
                host=s.host,
                port=s.http_port,
                max_message_bytes=s.max_message_bytes,
                ssl_context=ssl_context(s),
                auth=self.auth,
            )
            if s.http_port >= 0
            else None
        )
        self.metrics_port = -1
        self._started = False
        self._stopping: asyncio.Future[None] | None = None
        self._stopped = asyncio.Event()

    @property
    def model_name(self) -> str:
        return self.model.name

    @property
    def port(self) -> int:
        return self.grpc.port

    @property
    def http_port(self) -> int:
        """The bound HTTP port; -1 when HTTP is off."""
        return self.http.port if self.http is not None else -1

    @property
    def ready(self) -> bool:
        return self.dataplane.ready

    # ---------------------------------------------------------------- upstream mode
    def _upstream_pipeline(
        self, guard: Guard, metrics: Metrics, *, geometry: bool = True, version: int = 1
    ) -> Pipeline:
        if self.upstream is None or self.monitor is None:
            raise RuntimeError("not in upstream mode")
        return UpstreamPipeline(
            guard,
            metrics,
            geometry=geometry,
            version=version,
            client=self.upstream,
            monitor=self.monitor,
            rtol=self.settings.upstream_rtol,
        )

    async def _reference_check(self) -> None:
        """The monitor's check: the current model's reference inputs through the upstream."""
        pipeline = self.dataplane.pipeline
        if not isinstance(pipeline, UpstreamPipeline):
            raise RuntimeError("not in upstream mode")
        await pipeline.check_reference()

    async def _upstream_changed(self, serving: bool) -> None:
        """Health and readiness follow the upstream (never back to SERVING once stopping)."""
        if self.stopping:
            return
        self.dataplane.ready = serving
        if serving:
            await self.grpc.set_serving()
        else:
            await self.grpc.set_not_serving()

    async def _start_upstream(self) -> None:
        """Connect; if the upstream is up, the self-check through it (the wrong model there
        refuses the start); if not, start NOT_SERVING and let the monitor wait for it."""
        if self.upstream is None or self.monitor is None:
            return
        await self.upstream.start()
        await self.dataplane.start(check=False)
        ready, why = await self.upstream.ready()
        if ready:
            try:
                await self.dataplane.self_check()  # UpstreamMismatch: the start is refused
            except UpstreamMismatch:
                raise
            except UpstreamError as exc:  # it went away meanwhile: as if it were not up
                ready, why = False, str(exc)
        if ready:
            await self.monitor.check()
        else:
            self.monitor.problem = why
            log.warning(
                "%s is not ready at start (%s): NOT_SERVING until it is (polled every %g s)",
                self.upstream.describe(),
                why,
                self.monitor.poll_s,
            )
        self._monitor_task = asyncio.ensure_future(self._poll_upstream())

    async def _poll_upstream(self) -> None:
        if self.monitor is not None:
            await asyncio.sleep(self.monitor.poll_s)
            await self.monitor.run()

    # ---------------------------------------------------------------- reload
    def _load_model(self, artifact: str | None) -> ServedModel:
        """The served model of ``artifact`` (None: the configured one), under the current name.
        Runs in a worker thread."""
        s = self.settings
        path = artifact or s.artifact
        return ServedModel.load(
            path,
            name=self.model_name,
            device=s.device,
            geometry=s.geometry,
            threads=s.geometry_threads,
        )

    async def reload(self, artifact: str | None = None) -> int | None:
        """Reload (SIGHUP, watch): the new version, or None when refused (logged, counted)."""
        try:
            return await self.dataplane.load(self.model_name, artifact)
        except Exception:  # noqa: BLE001 - refused: logged by the data plane, the old one serves
            return None

    def _digest_path(self) -> Path:
        current = self.dataplane.model.artifact
        return Path(current or self.settings.artifact or DEFAULT_ARTIFACT) / "digest.json"

    async def _watch(self) -> None:
        """Reload when the served artifact's ``digest.json`` changes (mtime or content)."""
        seen = _stamp(self._digest_path())
        while True:
            await asyncio.sleep(WATCH_INTERVAL_S)
            path = self._digest_path()
            now = _stamp(path)
            if now is None or now == seen:
                continue
            seen = now
            log.info("%s changed: reloading", path)
            await self.reload(str(path.parent))
            seen = _stamp(self._digest_path()) or seen

    async def start(self) -> int:
        """Start everything; returns the gRPC port once the server reports SERVING."""
        s = self.settings
        self._started = True
        await self.grpc.start()
        if self.http is not None:
            try:
                await self.http.start()
            except BaseException:
                await self.grpc.stop(0)
                raise
        if self.upstream is None:
            await self.dataplane.start()
        else:
            try:
                await self._start_upstream()
            except BaseException:
                await self._stop(0)
                raise
        if s.metrics_port >= 0:
            self.metrics_port = self.metrics.serve_http(s.metrics_port, s.metrics_bind)
        if self.dataplane.ready:
            await self.grpc.set_serving()
        if s.watch and self.dataplane.loader is not None:
            self._watch_task = asyncio.ensure_future(self._watch())
        log.info(
            "serving model %r on port %d (metrics on %s)",
            self.model_name,
            self.port,
            self.metrics_port if self.metrics_port >= 0 else "off",
        )
        return self.port

    @property
    def stopping(self) -> bool:
        return self._stopping is not None

    async def stop(self, grace: float | None = None) -> None:
        """Stop accepting, let in-flight requests finish (up to ``grace`` s, default
        ``settings.grace_s``), then shut down. Later calls wait for the first one's stop."""
        if not self._started:
            return
        if self._stopping is None:
            self._stopping = asyncio.ensure_future(
                self._stop(self.settings.grace_s if grace is None else grace)
            )
        await asyncio.shield(self._stopping)

    async def _stop(self, grace: float) -> None:
        self.dataplane.ready = False
        if self._watch_task is not None:
            self._watch_task.cancel()
        if self._monitor_task is not None:
            self._monitor_task.cancel()
        transports = [self.grpc.stop(grace)]
        if self.http is not None:
            transports.append(self.http.stop(grace))
        await asyncio.gather(*transports)
        await self.dataplane.stop()
        if self.upstream is not None:
            await self.upstream.close()
        self.metrics.close()
        self._stopped.set()
        log.info("stopped")

    async def wait(self) -> None:
        await self._stopped.wait()


def _stamp(path: Path) -> tuple[float, bytes] | None:
    """``path``'s mtime and content (None while it is missing)."""
    try:
        return path.stat().st_mtime, path.read_bytes()
    except OSError:
        return None


async def serve(
    settings: Settings,
    announce: Callable[[GuardServer], None] = lambda srv: None,
) -> None:
    """Run until SIGTERM / SIGINT, then stop gracefully. ``announce(server)`` is called once it
    serves (after the signal handlers are installed, so an early SIGTERM is already graceful).
    Once stopped, the process is exiting: SIGTERM / SIGINT are ignored from then on (Python's
    finalization would reset its handlers to the default action, which kills with status 143).
    Main thread only (signal handlers)."""
    srv = GuardServer(settings)
    await srv.start()
    install_signal_handlers(asyncio.get_running_loop(), srv)
    announce(srv)
    await srv.wait()
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def install_signal_handlers(loop: asyncio.AbstractEventLoop, srv: GuardServer) -> None:
    """SIGTERM / SIGINT start ``srv.stop()``; any later one is logged and ignored. SIGHUP
    reloads the artifact (:meth:`GuardServer.reload`).

    Plain ``signal.signal`` handlers rather than ``loop.add_signal_handler``: closing the event
    loop resets the latter to the default action, so a second SIGTERM arriving while the process
    exits would kill it with status 143.
    """

    seen = 0

    def on_loop(sig: signal.Signals) -> None:
        nonlocal seen
        seen += 1
        if seen > 1 or srv.stopping:
            log.warning(
                "%s during the shutdown: ignored (in-flight requests are finishing, grace %g s)",
                sig.name,
                srv.settings.grace_s,
            )
            return
        log.info(
            "%s: shutting down (new requests get UNAVAILABLE; in-flight ones get up to %g s)",
            sig.name,
            srv.settings.grace_s,
        )
        asyncio.ensure_future(srv.stop())

    def handler(signum: int, frame: object) -> None:
        sig = signal.Signals(signum)
        try:
            loop.call_soon_threadsafe(on_loop, sig)
        except RuntimeError:  # the loop is already closed: the process is exiting anyway
            log.warning("%s while exiting: ignored", sig.name)

    for sig in STOP_SIGNALS:
        signal.signal(sig, handler)

    def on_hup() -> None:
        if srv.stopping:
            log.warning("SIGHUP during the shutdown: ignored")
            return
        log.info("SIGHUP: reloading the artifact")
        asyncio.ensure_future(srv.reload())

    def hup(signum: int, frame: object) -> None:
        try:
            loop.call_soon_threadsafe(on_hup)
        except RuntimeError:  # the loop is already closed: the process is exiting anyway
            pass

    signal.signal(signal.SIGHUP, hup)
