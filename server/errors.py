"""The one place where errors become gRPC status codes (a table and a decorator)."""

from __future__ import annotations

import functools
import logging
from typing import Any, Awaitable, Callable

import grpc

from guard.errors import ArtifactError, GuardError, InputError, ModelError, NotFittedError

log = logging.getLogger("guard.server")


class ModelNotFound(GuardError):
    """A request names a model this server does not serve."""


class Overloaded(GuardError):
    """The batching queue is full."""


class NotReady(GuardError):
    """The server is starting or shutting down."""


# Most specific first: the first matching class decides the code.
STATUS: list[tuple[type[BaseException], grpc.StatusCode]] = [
    (InputError, grpc.StatusCode.INVALID_ARGUMENT),
    (ModelNotFound, grpc.StatusCode.NOT_FOUND),
    (Overloaded, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (NotReady, grpc.StatusCode.UNAVAILABLE),
    (ModelError, grpc.StatusCode.FAILED_PRECONDITION),
    (ArtifactError, grpc.StatusCode.FAILED_PRECONDITION),
    (NotFittedError, grpc.StatusCode.FAILED_PRECONDITION),
    (GuardError, grpc.StatusCode.FAILED_PRECONDITION),
]


def status_of(exc: BaseException) -> grpc.StatusCode:
    for cls, code in STATUS:
        if isinstance(exc, cls):
            return code
    return grpc.StatusCode.INTERNAL


def outcome_of(code: grpc.StatusCode) -> str:
    """Bounded label value for the request counter."""
    return "ok" if code == grpc.StatusCode.OK else code.name.lower()


def grpc_errors(rpc: str):
    """Decorate an async servicer method: known errors -> their status, anything else ->
    INTERNAL (logged with its traceback, never sent to the client). Every call is counted with
    the servicer's ``count(rpc, outcome)``."""

    def wrap(fn: Callable[..., Awaitable[Any]]):
        @functools.wraps(fn)
        async def inner(self, request, context):  # noqa: ANN001
            try:
                result = await fn(self, request, context)
            except GuardError as exc:
                code = status_of(exc)
                self.count(rpc, outcome_of(code))
                await context.abort(code, str(exc))
            except Exception:  # noqa: BLE001
                log.exception("unexpected error in %s", rpc)
                self.count(rpc, "internal")
                await context.abort(grpc.StatusCode.INTERNAL,
                                    f"internal error in {rpc} (the server log has the details)")
            self.count(rpc, "ok")
            return result

        return inner

    return wrap
