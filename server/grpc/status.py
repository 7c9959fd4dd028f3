"""Errors -> gRPC status: a decorator for servicer methods that reads :data:`server.errors.STATUS`.

A known error is answered with its table code and its message; anything else is a bug, answered
``INTERNAL`` with a message that points to the server log, where its traceback is written. Every
call is counted once by the servicer's ``count(rpc, outcome)`` with a bounded outcome label.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc

from ..errors import Code, code_of

log = logging.getLogger(__name__)

_Method = TypeVar("_Method", bound=Callable[..., Awaitable[Any]])


def grpc_code(code: Code) -> grpc.StatusCode:
    return grpc.StatusCode[code.grpc_name]


def grpc_errors(rpc: str) -> Callable[[_Method], _Method]:
    """Decorate ``async def Method(self, request, context)`` of a servicer named ``rpc``."""

    def wrap(fn: _Method) -> _Method:
        @functools.wraps(fn)
        async def inner(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
            try:
                result = await fn(self, request, context)
            except Exception as exc:  # noqa: BLE001 - every error gets a status, from the table
                code = code_of(exc)
                self.count(rpc, code.outcome)
                if code is Code.INTERNAL:
                    log.exception("unexpected error in %s", rpc)
                    await context.abort(
                        grpc_code(code), f"internal error in {rpc} (the server log has the details)"
                    )
                await context.abort(grpc_code(code), str(exc))
            self.count(rpc, Code.OK.outcome)
            return result

        return inner  # type: ignore[return-value]

    return wrap
