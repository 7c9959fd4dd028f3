"""The HTTP/REST transport: the Open Inference Protocol's REST v2 API (KServe v2 / Triton, with
Triton's binary tensor extension) over the same data plane as gRPC, on aiohttp.

Every route passes :meth:`HttpServer._endpoint`, the HTTP twin of the gRPC gate: it times the
request (``guard_request_duration_seconds``), refuses new requests once a stop began (503, the
gRPC gate's message), runs accepted ones as tracked tasks (:mod:`.drain`), turns every error into
``{"error": "..."}`` with the HTTP status of :mod:`server.errors`' table, counts the outcome in
``guard_requests_total{rpc,outcome}`` under the same RPC names as gRPC, and writes the access log
line (:mod:`server.accesslog`). Paths and methods the API does not have get 404 / 405 as
``{"error": ...}`` too (not counted: they name no operation).

A body over ``max_message_bytes`` is refused before it is read when its length is declared, and
while it is read otherwise: ``RESOURCE_EXHAUSTED`` (the table's outcome), sent as HTTP 413 (the
status HTTP has for exactly this; the table's 429 means "retry later", which would not help).
"""

from __future__ import annotations

import json
import logging
import ssl
import time
import zlib
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from aiohttp import web

from guard.errors import InputError

from .. import accesslog
from ..accesslog import AccessEntry
from ..dataplane import DataPlane
from ..errors import Code, Overloaded, code_of, echo, status_message
from ..security import TokenAuth
from ..shutdown import Drain
from . import convert

log = logging.getLogger(__name__)

#: Probes: answered during a stop (live, not ready) and never refused.
PROBES = frozenset({"ServerLive", "ServerReady", "ModelReady"})
#: Answered without a token (``/v2/health/*``, as gRPC's ServerLive / ServerReady).
OPEN = frozenset({"ServerLive", "ServerReady"})
#: Time aiohttp gets to finish writing responses once the drain is over (seconds).
CLOSE_GRACE_S = 0.25
HEADER_LENGTH = "Inference-Header-Content-Length"

Handler = Callable[[web.Request, AccessEntry], Coroutine[Any, Any, web.StreamResponse]]


class MessageTooLarge(Overloaded):
    """A request body over ``max_message_bytes`` (RESOURCE_EXHAUSTED, sent as HTTP 413)."""


def http_status(exc: BaseException, code: Code) -> int:
    return 413 if isinstance(exc, MessageTooLarge) else code.http_status


def error_response(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


class HttpServer:
    """The REST server of ``dataplane`` on ``host:port`` (0 = any free port)."""

    def __init__(
        self,
        dataplane: DataPlane,
        *,
        host: str = "0.0.0.0",
        port: int = 0,
        max_message_bytes: int = 64 * 1024 * 1024,
        ssl_context: ssl.SSLContext | None = None,
        auth: TokenAuth | None = None,
    ) -> None:
        """``ssl_context``: TLS (:func:`server.security.ssl_context`), None = plaintext;
        ``auth``: every route but ``/v2/health/*`` needs ``Authorization: Bearer <token>``."""
        self.dataplane = dataplane
        self.ssl_context = ssl_context
        self.auth = auth
        self.host = host
        self.requested_port = port
        self.max_message_bytes = max_message_bytes
        self.port = 0
        self._drain = Drain()
        self._runner: web.AppRunner | None = None

    @property
    def in_flight(self) -> int:
        return self._drain.in_flight

    # ---------------------------------------------------------------- lifecycle
    def app(self) -> web.Application:
        app = web.Application(
            client_max_size=self.max_message_bytes, middlewares=[_json_http_errors]
        )
        ep = self._endpoint
        r = app.router
        r.add_get("/v2/health/live", ep("ServerLive", self._live))
        r.add_get("/v2/health/ready", ep("ServerReady", self._ready))
        r.add_get("/v2", ep("ServerMetadata", self._server_metadata))
        for base in ("/v2/models/{name}", "/v2/models/{name}/versions/{version}"):
            r.add_get(base, ep("ModelMetadata", self._model_metadata))
            r.add_get(base + "/ready", ep("ModelReady", self._model_ready))
            r.add_post(base + "/infer", ep("ModelInfer", self._infer))
        r.add_post("/v2/repository/index", ep("RepositoryIndex", self._repository_index))
        r.add_post("/v2/repository/models/{name}/load", ep("RepositoryModelLoad", self._load))
        r.add_post("/v2/repository/models/{name}/unload", ep("RepositoryModelUnload", self._unload))
        return app

    async def start(self) -> int:
        """Bind and serve; returns the port."""
        # auto_decompress off: :meth:`_read_body` inflates, bounded by max_message_bytes
        runner = web.AppRunner(
            self.app(), access_log=None, shutdown_timeout=CLOSE_GRACE_S, auto_decompress=False
        )
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.requested_port, ssl_context=self.ssl_context)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = int(runner.addresses[0][1])
        log.info("HTTP listening on %s:%d", self.host, self.port)
        return self.port

    async def stop(self, grace: float | None) -> None:
        """Refuse new requests (503), let in-flight ones finish (``grace`` s; None = 0), answer
        what is left 503, then close the port."""
        if self._runner is None:
            return
        grace = grace or 0.0
        cut = await self._drain.drain(grace)
        if cut:
            log.warning(
                "%d HTTP request(s) still running when the grace period of %g s ended were "
                "answered 503",
                cut,
                grace,
            )
        await self._runner.cleanup()
        self._runner = None

    # ---------------------------------------------------------------- the gate of every route
    def _endpoint(self, rpc: str, fn: Handler) -> Callable[[web.Request], Awaitable[Any]]:
        metrics = self.dataplane.metrics
        observe = metrics.request_seconds.labels(rpc=rpc).observe
        probe = rpc in PROBES
        auth = None if rpc in OPEN else self.auth

        async def handle(request: web.Request) -> web.StreamResponse:
            t0 = time.perf_counter()
            entry = AccessEntry("http", rpc, request.match_info.get("name", ""))
            try:
                if auth is not None:
                    auth.check(request.headers.get("Authorization"))
                if not probe:
                    self._drain.admit()
                response = await self._drain.run(fn(request, entry))
                code = Code.OK
            except Exception as exc:  # noqa: BLE001 - every error gets a status, from the table
                code = code_of(exc)
                if code is Code.INTERNAL:
                    log.error("unexpected error in %s", rpc, exc_info=exc)
                    message = f"internal error in {rpc} (the server log has the details)"
                else:
                    message = status_message(exc)
                response = error_response(http_status(exc, code), message)
                if code is Code.UNAUTHENTICATED:
                    response.headers["WWW-Authenticate"] = "Bearer"
            metrics.count_request(rpc, code.outcome)
            elapsed = time.perf_counter() - t0
            observe(elapsed)
            entry.status, entry.http_status, entry.latency_s = code.name, response.status, elapsed
            accesslog.emit(entry)
            return response

        return handle

    # ---------------------------------------------------------------- routes
    async def _live(self, request: web.Request, entry: AccessEntry) -> web.Response:
        return _flag("live", self.dataplane.live())

    async def _ready(self, request: web.Request, entry: AccessEntry) -> web.Response:
        return _flag("ready", self.dataplane.ready)

    async def _model_ready(self, request: web.Request, entry: AccessEntry) -> web.Response:
        name, version = _model(request)
        return _flag("ready", self.dataplane.model_ready(name, version))

    async def _server_metadata(self, request: web.Request, entry: AccessEntry) -> web.Response:
        return web.json_response(convert.server_metadata(self.dataplane.server_metadata()))

    async def _model_metadata(self, request: web.Request, entry: AccessEntry) -> web.Response:
        md = self.dataplane.model_metadata(*_model(request))
        return web.json_response(convert.model_metadata(md))

    async def _infer(self, request: web.Request, entry: AccessEntry) -> web.Response:
        name, version = _model(request)
        body = await self._read_body(request)
        doc, binary = convert.split_body(body, request.headers.get(HEADER_LENGTH))
        call = convert.infer_request(name, version, doc, binary)
        if call.request.inputs and call.request.inputs[0].shape:
            entry.images = call.request.inputs[0].shape[0]
        resp = await self.dataplane.infer(call.request)
        out = {t.name: t.data for t in resp.outputs}
        entry.set_decisions(out.get("abstain"), out.get("flags"))
        body_out = convert.infer_response(resp, call)
        if body_out.header_length is None:
            return web.Response(body=body_out.data, content_type="application/json")
        return web.Response(
            body=body_out.data,
            content_type="application/octet-stream",
            headers={HEADER_LENGTH: str(body_out.header_length)},
        )

    async def _repository_index(self, request: web.Request, entry: AccessEntry) -> web.Response:
        doc = await self._json_body(request)
        ready = bool(doc.get("ready", False)) if isinstance(doc, dict) else False
        return web.json_response(convert.repository_index(self.dataplane.repository_index(ready)))

    async def _load(self, request: web.Request, entry: AccessEntry) -> web.Response:
        artifact = convert.load_artifact(await self._json_body(request))
        await self.dataplane.load(request.match_info["name"], artifact)
        return web.Response(status=200)

    async def _unload(self, request: web.Request, entry: AccessEntry) -> web.Response:
        await self._json_body(request)
        self.dataplane.unload(request.match_info["name"])
        return web.Response(status=200)

    async def _json_body(self, request: web.Request) -> Any:
        """The JSON body of a repository request (None when empty)."""
        body = await self._read_body(request)
        if not body.strip():
            return None
        try:
            return json.loads(body)
        except ValueError as exc:
            raise InputError(f"the body is not JSON: {exc}") from None

    async def _read_body(self, request: web.Request) -> bytes:
        """The body, decompressed (``Content-Encoding: gzip`` / ``deflate``, as tritonclient
        sends it on request), never more than ``max_message_bytes``."""
        limit = self.max_message_bytes
        declared = request.content_length
        if declared is not None and declared > limit:
            raise _too_large(declared, limit)
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise _too_large(None, limit) from None
        encoding = request.headers.get("Content-Encoding", "identity").lower()
        if encoding in ("identity", ""):
            return body
        if encoding not in ("gzip", "deflate"):
            raise InputError(
                f"Content-Encoding {echo(encoding)} not supported; use gzip, deflate or none"
            )
        inflate = zlib.decompressobj(31 if encoding == "gzip" else 15)
        try:
            data = inflate.decompress(body, limit + 1)
        except zlib.error as exc:
            raise InputError(f"cannot decompress the {encoding} body: {exc}") from None
        if len(data) > limit:
            raise _too_large(None, limit)
        return data


def _too_large(size: int | None, limit: int) -> MessageTooLarge:
    what = f"{size} bytes" if size is not None else "the request body"
    return MessageTooLarge(
        f"{what} over this server's limit of {limit} bytes per message "
        f"(GUARD_MAX_MESSAGE_BYTES); send fewer images per request"
    )


def _model(request: web.Request) -> tuple[str, str]:
    return request.match_info["name"], request.match_info.get("version", "")


def _flag(key: str, value: bool) -> web.Response:
    """A health answer: 200 when true, 400 when false (the protocol's "4xx = false")."""
    return web.json_response({key: value}, status=200 if value else 400)


@web.middleware
async def _json_http_errors(request: web.Request, handler: Any) -> web.StreamResponse:
    """aiohttp's own refusals (no such path, method not allowed) as ``{"error": ...}``."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        what = echo(f"{request.method} {request.path}")
        message = {
            404: f"not found: {what} is no endpoint of this server (Open Inference Protocol "
            f"REST v2: /v2/...)",
            405: f"method not allowed: {what}",
        }.get(exc.status, exc.reason)
        entry = AccessEntry("http", "-", status="-", http_status=exc.status)
        accesslog.emit(entry)
        resp = error_response(exc.status, message)
        if exc.status == 405 and "Allow" in exc.headers:
            resp.headers["Allow"] = exc.headers["Allow"]
        return resp
