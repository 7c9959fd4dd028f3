"""Errors -> gRPC status: :func:`abort` reads :data:`server.errors.STATUS`, and the decorator
:func:`grpc_errors` applies it to servicer methods.

A known error is answered with its table code and its (bounded) message; anything else is a bug,
answered ``INTERNAL`` with a message that points to the server log, where its traceback is
written. Every call is counted once with a bounded outcome label: by the servicer's
``count(rpc, outcome)`` here, by the transport's gate (:mod:`.server`) for the calls it answers
itself (undecodable, refused while shutting down, cut at the end of the grace period).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn, TypeVar

import grpc

from ..errors import Code, code_of, status_message

log = logging.getLogger(__name__)

_Method = TypeVar("_Method", bound=Callable[..., Awaitable[Any]])


def grpc_code(code: Code) -> grpc.StatusCode:
    return grpc.StatusCode[code.grpc_name]


async def abort(
    context: grpc.aio.ServicerContext,
    rpc: str,
    exc: BaseException,
    count: Callable[[str, str], None],
) -> NoReturn:
    """End the call with the status of ``exc`` (the table's code), counted as its outcome."""
    code = code_of(exc)
    count(rpc, code.outcome)
    if code is Code.INTERNAL:
        log.error("unexpected error in %s", rpc, exc_info=exc)
        await context.abort(
            grpc_code(code), f"internal error in {rpc} (the server log has the details)"
        )
    await context.abort(grpc_code(code), status_message(exc))
    raise AssertionError("context.abort returned")  # it always raises; for the type checker


def grpc_errors(rpc: str) -> Callable[[_Method], _Method]:
    """Decorate ``async def Method(self, request, context)`` of a servicer named ``rpc``."""

    def wrap(fn: _Method) -> _Method:
        @functools.wraps(fn)
        async def inner(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
            try:
                result = await fn(self, request, context)
            except Exception as exc:  # noqa: BLE001 - every error gets a status, from the table
                await abort(context, rpc, exc, self.count)
            self.count(rpc, Code.OK.outcome)
            return result

        return inner  # type: ignore[return-value]

    return wrap
