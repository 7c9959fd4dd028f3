"""The gRPC status decorator: table codes with the error's message, INTERNAL (logged, details
withheld) for anything unexpected, one count per call."""

from __future__ import annotations

import asyncio
import logging

import grpc
import pytest

from guard.errors import InputError
from server.errors import Overloaded
from server.grpc.status import grpc_errors


class _Abort(Exception):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self.code, self.details = code, details


class _Context:
    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        raise _Abort(code, details)


class _Servicer:
    def __init__(self, exc: BaseException | None) -> None:
        self.exc = exc
        self.counts: list[tuple[str, str]] = []

    def count(self, rpc: str, outcome: str) -> None:
        self.counts.append((rpc, outcome))

    @grpc_errors("Method")
    async def Method(self, request: object, context: object) -> str:
        if self.exc is not None:
            raise self.exc
        return "answer"


def _call(exc: BaseException | None) -> tuple[object, list[tuple[str, str]]]:
    s = _Servicer(exc)
    try:
        return asyncio.run(s.Method(None, _Context())), s.counts
    except _Abort as abort:
        return abort, s.counts


def test_ok_is_counted() -> None:
    assert _call(None) == ("answer", [("Method", "ok")])


@pytest.mark.parametrize(
    "exc,code,outcome",
    [
        (InputError("bad shape [2]"), grpc.StatusCode.INVALID_ARGUMENT, "invalid_argument"),
        (Overloaded("queue full; retry"), grpc.StatusCode.RESOURCE_EXHAUSTED, "resource_exhausted"),
    ],
)
def test_known_errors_keep_their_message(
    exc: Exception, code: grpc.StatusCode, outcome: str
) -> None:
    abort, counts = _call(exc)
    assert isinstance(abort, _Abort)
    assert (abort.code, abort.details) == (code, str(exc))
    assert counts == [("Method", outcome)]


def test_unexpected_error_is_internal_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="server.grpc.status"):
        abort, counts = _call(ZeroDivisionError("secret detail"))
    assert isinstance(abort, _Abort)
    assert abort.code == grpc.StatusCode.INTERNAL
    assert "secret detail" not in abort.details and "server log" in abort.details
    assert counts == [("Method", "internal")]
    assert any(r.exc_info and "Method" in r.getMessage() for r in caplog.records)
