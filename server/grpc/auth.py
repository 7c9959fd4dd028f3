"""Bearer-token authentication for the gRPC transport: a server interceptor over
:class:`server.security.TokenAuth`.

Every call needs the metadata ``authorization: Bearer <token>``, except the probes a load
balancer or an orchestrator sends without credentials: the standard health service
(``grpc.health.v1.Health``, Check and Watch) and the Open Inference Protocol's ServerLive and
ServerReady (they reveal nothing but liveness). ModelReady, the metadata RPCs and reflection need
the token (they name the models). A refused call is answered ``UNAUTHENTICATED`` before its
request is decoded, and counted in ``guard_requests_total{outcome="unauthenticated"}`` (and
written to the access log) for our services' RPCs. Neither the token nor the header is logged
or echoed.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import grpc
from grpc_health.v1 import health_pb2

from .. import accesslog
from ..errors import Code, Unauthenticated
from ..metrics import Metrics
from ..security import TokenAuth
from .gen.inference import grpc_service_pb2
from .status import abort

log = logging.getLogger(__name__)

_OIP = grpc_service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name
_HEALTH = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
#: Methods answered without credentials: the probes.
OPEN_METHODS = frozenset(
    {
        f"/{_HEALTH}/Check",
        f"/{_HEALTH}/Watch",
        f"/{_OIP}/ServerLive",
        f"/{_OIP}/ServerReady",
    }
)
HEADER = "authorization"

_KINDS = {
    (False, False): grpc.unary_unary_rpc_method_handler,
    (False, True): grpc.unary_stream_rpc_method_handler,
    (True, False): grpc.stream_unary_rpc_method_handler,
    (True, True): grpc.stream_stream_rpc_method_handler,
}


def authorization(metadata: Iterable[Any] | None) -> str | None:
    """The first ``authorization`` value of the call's metadata (None when absent)."""
    for key, value in metadata or ():
        if key == HEADER:
            return value.decode("latin-1") if isinstance(value, bytes) else str(value)
    return None


class TokenInterceptor(grpc.aio.ServerInterceptor):
    """Refuses calls without a valid bearer token (all but :data:`OPEN_METHODS`).

    ``counted``: the services whose refused calls are counted in the request metrics.
    """

    def __init__(self, auth: TokenAuth, metrics: Metrics, counted: Iterable[str]) -> None:
        self._auth = auth
        self._count = metrics.count_request
        self._counted = tuple(f"/{s}/" for s in counted)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        method = handler_call_details.method
        handler = await continuation(handler_call_details)
        if handler is None or method in OPEN_METHODS:
            return handler
        try:
            self._auth.check(authorization(handler_call_details.invocation_metadata))
        except Unauthenticated as exc:
            log.debug("refused %s: %s", method, exc)
            return self._refusal(method, handler, exc)
        return handler

    def _refusal(
        self, method: str, handler: grpc.RpcMethodHandler, exc: Unauthenticated
    ) -> grpc.RpcMethodHandler:
        """A handler of the same kind as ``handler`` that answers UNAUTHENTICATED (the request
        is not decoded)."""
        rpc = method.rsplit("/", 1)[-1]
        ours = method.startswith(self._counted)
        count = self._count if ours else _no_count

        async def refuse(request: Any, context: grpc.aio.ServicerContext) -> Any:
            if ours:  # the access log line the gate writes for the calls it sees
                accesslog.emit(
                    accesslog.grpc_entry(rpc, None, None, Code.UNAUTHENTICATED.name, 0.0)
                )
            await abort(context, rpc, exc, count)

        make = _KINDS[(bool(handler.request_streaming), bool(handler.response_streaming))]
        return make(refuse, response_serializer=handler.response_serializer)


def _no_count(rpc: str, outcome: str) -> None:
    """Refusals of health / reflection calls are not request traffic."""
