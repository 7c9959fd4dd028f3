"""The one error -> status table: each row, its gRPC and HTTP codes, the fallback."""

from __future__ import annotations

import grpc
import pytest

from guard.errors import (
    ArtifactError,
    DataError,
    GuardError,
    InputError,
    ModelError,
    NotFittedError,
)
from guard.geometry.errors import GeometryError
from server.errors import STATUS, Code, ModelNotFound, NotReady, Overloaded, code_of

CASES = [
    (InputError("x"), Code.INVALID_ARGUMENT, "INVALID_ARGUMENT", 400),
    (GeometryError("x"), Code.INVALID_ARGUMENT, "INVALID_ARGUMENT", 400),
    (ModelNotFound("x"), Code.NOT_FOUND, "NOT_FOUND", 404),
    (Overloaded("x"), Code.RESOURCE_EXHAUSTED, "RESOURCE_EXHAUSTED", 429),
    (NotReady("x"), Code.UNAVAILABLE, "UNAVAILABLE", 503),
    (ModelError("x"), Code.FAILED_PRECONDITION, "FAILED_PRECONDITION", 400),
    (ArtifactError("x"), Code.FAILED_PRECONDITION, "FAILED_PRECONDITION", 400),
    (NotFittedError("x"), Code.FAILED_PRECONDITION, "FAILED_PRECONDITION", 400),
    (DataError("x"), Code.FAILED_PRECONDITION, "FAILED_PRECONDITION", 400),
    (ValueError("x"), Code.INTERNAL, "INTERNAL", 500),  # not ours: a bug
    (KeyError("x"), Code.INTERNAL, "INTERNAL", 500),
]


@pytest.mark.parametrize("exc,code,grpc_name,http", CASES, ids=[type(c[0]).__name__ for c in CASES])
def test_table(exc: BaseException, code: Code, grpc_name: str, http: int) -> None:
    assert code_of(exc) is code
    assert code.grpc_name == grpc_name and code.http_status == http
    assert grpc.StatusCode[code.grpc_name].name == grpc_name


def test_every_code_is_a_grpc_code_and_rows_go_specific_first() -> None:
    for code in Code:
        assert grpc.StatusCode[code.grpc_name]
        assert code.outcome == code.name.lower()
    classes = [cls for cls, _ in STATUS]
    for i, cls in enumerate(classes):  # no row is shadowed by a more general one above it
        assert not any(issubclass(cls, earlier) for earlier in classes[:i]), cls
    assert classes[-1] is GuardError
