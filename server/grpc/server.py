"""The gRPC transport: Open Inference Protocol + guard.v1 over one data plane, the standard
health service, server reflection, and a graceful stop that loses no accepted request.

Every call of our two services passes :class:`Gate` (a server interceptor), which decodes the
request itself (an undecodable message is ``INVALID_ARGUMENT``, not gRPC's ``UNKNOWN`` with a
logged traceback), times it end to end (``guard_request_duration_seconds``) and knows which calls
are in flight. With token auth on, :class:`~.auth.TokenInterceptor` sits outside the gate and
answers ``UNAUTHENTICATED`` before anything is decoded; TLS comes from ``credentials``
(:func:`server.security.grpc_credentials`); reflection can be left out.

Health reports NOT_SERVING from the moment the port is bound until :meth:`GrpcServer.set_serving`
(called once the data plane passed its self-check). :meth:`GrpcServer.stop`, in this order:

1. health NOT_SERVING;
2. every new call of our services is answered ``UNAVAILABLE`` ("shutting down", retryable) by
   the gate while the port stays open (the probes ServerLive / ServerReady / ModelReady are still
   answered: live, not ready);
3. calls in flight finish, up to the grace period, and the port stays open until no new call
   has arrived for :data:`QUIET_S` (a client that sent its next request before it saw the
   refusal still gets one);
4. calls still running when the grace period ends are answered ``UNAVAILABLE`` ("stopped before
   this request finished"), not cut off;
5. only then is gRPC itself stopped.

Why the gate and not gRPC's own ``server.stop(grace)``: gRPC core cancels every call that reaches
it after its shutdown began (the client sees ``CANCELLED``, neither an answer nor a retryable
refusal), so gRPC is stopped only once the clients have been told to go away.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import descriptor_pool
from google.protobuf.descriptor import FileDescriptor
from google.protobuf.message import DecodeError
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2

from guard.errors import InputError

from .. import accesslog
from ..dataplane import DataPlane
from ..errors import NotReady
from ..metrics import Metrics
from ..security import TokenAuth
from ..shutdown import CLOSE_GRACE_S, Drain
from .auth import TokenInterceptor
from .gen.guard_v1 import guard_pb2, guard_pb2_grpc
from .gen.inference import grpc_service_pb2, grpc_service_pb2_grpc
from .servicers import GuardServicer, InferenceServicer
from .status import abort

log = logging.getLogger(__name__)

#: Our services' full names (what health and reflection report).
SERVICES = (
    grpc_service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name,
    guard_pb2.DESCRIPTOR.services_by_name["GuardService"].full_name,
)
HEALTH_SERVICE = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
#: Probes: answered (live, not ready) during a stop, and not counted as traffic.
PROBES = frozenset({"ServerLive", "ServerReady", "ModelReady"})


def reflection_pool(files: Iterable[FileDescriptor]) -> descriptor_pool.DescriptorPool:
    """One pool holding ``files`` and their dependencies, for the reflection service.

    Our generated files live in a private pool (see :mod:`server.grpc.gen`), the health and
    reflection protos in protobuf's default pool; reflection answers from a single pool.
    """
    pool = descriptor_pool.DescriptorPool()
    added: set[str] = set()

    def add(fd: FileDescriptor) -> None:
        if fd.name in added:
            return
        for dep in fd.dependencies:
            add(dep)
        pool.AddSerializedFile(fd.serialized_pb)
        added.add(fd.name)

    for fd in files:
        add(fd)
    return pool


@dataclass(frozen=True)
class _Received:
    """What the gate's deserializer hands to the handler: the message, or why there is none."""

    message: Any
    error: BaseException | None
    t0: float  # perf_counter when the bytes were handed over


class Gate(grpc.aio.ServerInterceptor):
    """Wraps the unary methods of ``services``: safe decoding, timing, admission and the drain.

    Calls it answers itself (undecodable, refused, cut) are counted in ``guard_requests_total``
    like the servicers' own answers.
    """

    def __init__(self, services: Iterable[str], metrics: Metrics) -> None:
        self._prefixes = tuple(f"/{s}/" for s in services)
        self._metrics = metrics
        self._handlers: dict[str, grpc.RpcMethodHandler] = {}
        self._drain = Drain()

    @property
    def in_flight(self) -> int:
        return self._drain.in_flight

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        method = handler_call_details.method
        cached = self._handlers.get(method)
        if cached is not None:
            return cached
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None or not method.startswith(self._prefixes):
            return handler
        wrapped = self._wrap(method.rsplit("/", 1)[1], handler)
        self._handlers[method] = wrapped
        return wrapped

    def _wrap(self, rpc: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        parse = handler.request_deserializer
        behavior = handler.unary_unary
        count = self._metrics.count_request
        observe = self._metrics.request_seconds.labels(rpc=rpc).observe
        probe = rpc in PROBES

        def deserialize(raw: bytes) -> _Received:
            t0 = time.perf_counter()
            try:
                return _Received(parse(raw), None, t0)
            except DecodeError as exc:
                error = InputError(f"cannot decode the {rpc} request ({len(raw)} bytes): {exc}")
                return _Received(None, error, t0)
            except Exception as exc:  # noqa: BLE001 - answered INTERNAL (and logged) by abort()
                return _Received(None, exc, t0)

        async def gated(received: _Received, context: grpc.aio.ServicerContext) -> Any:
            response = None
            try:
                if received.error is not None:
                    await abort(context, rpc, received.error, count)
                if not probe:
                    try:
                        self._drain.admit()
                    except NotReady as exc:
                        await abort(context, rpc, exc, count)
                response = await self._run(rpc, behavior, received.message, context)
                return response
            finally:
                elapsed = time.perf_counter() - received.t0
                observe(elapsed)
                _access_log(rpc, received.message, response, context, elapsed)

        return grpc.unary_unary_rpc_method_handler(
            gated, request_deserializer=deserialize, response_serializer=handler.response_serializer
        )

    async def _run(
        self,
        rpc: str,
        behavior: Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]],
        request: Any,
        context: grpc.aio.ServicerContext,
    ) -> Any:
        """An accepted call: in flight until it returns; cut (UNAVAILABLE) by :meth:`drain`."""
        task = asyncio.current_task()
        if task is None:  # not in a task (never under gRPC): nothing to track or cut
            return await behavior(request, context)
        self._drain.add(task)
        try:
            return await behavior(request, context)
        except asyncio.CancelledError:
            if not self._drain.was_cut(task) or context.done():
                raise  # the client went away (or its status is already on its way)
            if sys.version_info >= (3, 11):
                task.uncancel()
            await abort(
                context, rpc, NotReady(self._drain.cut_message), self._metrics.count_request
            )
        finally:
            self._drain.discard(task)

    async def drain(self, grace: float) -> int:
        """Refuse new calls, let those in flight finish (:meth:`.Drain.drain`); returns how
        many were cut at the end of ``grace``."""
        return await self._drain.drain(grace)


def _access_log(
    rpc: str, request: Any, response: Any, context: grpc.aio.ServicerContext, elapsed: float
) -> None:
    """The call's access log line (:mod:`server.accesslog`); never fails the call."""
    if not accesslog.enabled(rpc):
        return
    try:
        code = context.code() if response is None else None
        status = "CANCELLED" if code is None and response is None else "OK"
        if isinstance(code, grpc.StatusCode):
            status = code.name
        accesslog.emit(accesslog.grpc_entry(rpc, request, response, status, elapsed))
    except Exception:  # noqa: BLE001 - logging must not turn an answer into an error
        log.debug("access log line of %s failed", rpc, exc_info=True)


class GrpcServer:
    """The gRPC server of ``dataplane`` on ``host:port`` (0 = any free port)."""

    def __init__(
        self,
        dataplane: DataPlane,
        *,
        host: str = "0.0.0.0",
        port: int = 0,
        max_message_bytes: int = 64 * 1024 * 1024,
        credentials: grpc.ServerCredentials | None = None,
        auth: TokenAuth | None = None,
        reflection: bool = True,
    ) -> None:
        """``credentials``: TLS (:func:`server.security.grpc_credentials`), None = plaintext;
        ``auth``: bearer tokens required (:mod:`.auth`); ``reflection``: serve reflection."""
        self.dataplane = dataplane
        self.credentials = credentials
        self.auth = auth
        self.reflection = reflection
        self.host = host
        self.requested_port = port
        self.max_message_bytes = max_message_bytes
        self.port = 0
        self._health = health.aio.HealthServicer()
        self._gate = Gate(SERVICES, dataplane.metrics)
        self._server: grpc.aio.Server | None = None

    async def start(self) -> int:
        """Bind and start serving (health NOT_SERVING until :meth:`set_serving`); the port."""
        opts = [
            ("grpc.max_receive_message_length", self.max_message_bytes),
            ("grpc.max_send_message_length", self.max_message_bytes),
        ]
        interceptors: list[grpc.aio.ServerInterceptor] = [self._gate]
        if self.auth is not None:  # outermost: a refused call never reaches the gate
            interceptors.insert(0, TokenInterceptor(self.auth, self.dataplane.metrics, SERVICES))
        server = grpc.aio.server(options=opts, interceptors=interceptors)
        grpc_service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(
            InferenceServicer(self.dataplane), server
        )
        guard_pb2_grpc.add_GuardServiceServicer_to_server(GuardServicer(self.dataplane), server)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        if self.reflection:
            pool = reflection_pool(
                [
                    grpc_service_pb2.DESCRIPTOR,
                    guard_pb2.DESCRIPTOR,
                    health_pb2.DESCRIPTOR,
                    reflection_pb2.DESCRIPTOR,
                ]
            )
            reflection.enable_server_reflection(
                SERVICES + (HEALTH_SERVICE, reflection.SERVICE_NAME), server, pool=pool
            )
        address = f"{self.host}:{self.requested_port}"
        if self.credentials is None:
            self.port = server.add_insecure_port(address)
        else:
            self.port = server.add_secure_port(address, self.credentials)
        if self.port == 0:
            raise OSError(f"cannot bind {self.host}:{self.requested_port}")
        await self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        self._server = server
        await server.start()
        log.info(
            "gRPC listening on %s:%d (%s%s, reflection %s)",
            self.host,
            self.port,
            "plaintext" if self.credentials is None else "TLS",
            ", bearer tokens" if self.auth is not None else "",
            "on" if self.reflection else "off",
        )
        return self.port

    async def set_serving(self) -> None:
        await self._set_health(health_pb2.HealthCheckResponse.SERVING)

    async def set_not_serving(self) -> None:
        """Health NOT_SERVING (e.g. the upstream model server is down) until
        :meth:`set_serving`; ignored once the stop began."""
        await self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)

    async def _set_health(self, status: int) -> None:
        for name in ("",) + SERVICES:
            await self._health.set(name, status)

    @property
    def in_flight(self) -> int:
        """Calls of our services being handled now."""
        return self._gate.in_flight

    async def stop(self, grace: float | None) -> None:
        """Health NOT_SERVING, refuse new calls (UNAVAILABLE), let in-flight ones finish
        (``grace`` s; None = 0), answer what is left UNAVAILABLE, then stop gRPC."""
        if self._server is None:
            return
        await self._health.enter_graceful_shutdown()
        grace = grace or 0.0
        cut = await self._gate.drain(grace)
        if cut:
            log.warning(
                "%d request(s) still running when the grace period of %g s ended were answered "
                "UNAVAILABLE",
                cut,
                grace,
            )
        await self._server.stop(CLOSE_GRACE_S)
