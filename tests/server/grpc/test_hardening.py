"""Hostile requests over gRPC: undecodable messages are INVALID_ARGUMENT (no traceback logged),
echoed client text is bounded, the same output cannot be asked for twice."""

from __future__ import annotations

import logging

import grpc
import pytest

from server.errors import MAX_ECHO, MAX_MESSAGE
from server.grpc.gen.guard_v1 import guard_pb2 as gpb
from server.grpc.gen.inference import grpc_service_pb2 as pb

from ..helpers import MODEL, Stubs, decode, expect_error, images, infer_request, run

INFER = "/inference.GRPCInferenceService/ModelInfer"
CLASSIFY = "/guard.v1.GuardService/Classify"
METADATA = "/inference.GRPCInferenceService/ModelMetadata"
INVALID = grpc.StatusCode.INVALID_ARGUMENT

_VALID = infer_request(images(1, seed=0), outputs=["prediction"]).SerializeToString()
UNDECODABLE = {  # as any of the three requests
    "garbage": b"\xff\xff\xff\xff garbage",
    "truncated": _VALID[: len(_VALID) // 2],
    "bad_utf8_name": b"\x0a\x02\xff\xfe",  # field 1 (the model name), 2 bytes, not UTF-8
}
CASES = [(m, n, UNDECODABLE[n]) for m in (INFER, CLASSIFY, METADATA) for n in UNDECODABLE]
CASES.append((INFER, "bad_utf8_output_name", _VALID + b"\x32\x04\x0a\x02\xc3\x28"))


async def _raw_call(target: str, method: str, payload: bytes) -> tuple[grpc.StatusCode, str]:
    """Send ``payload`` as the request bytes of ``method`` (no serializer): status and details."""
    async with grpc.aio.insecure_channel(target) as ch:
        call = ch.unary_unary(method, request_serializer=None, response_deserializer=None)
        try:
            await call(payload, timeout=10)
        except grpc.aio.AioRpcError as exc:
            return exc.code(), exc.details() or ""
    return grpc.StatusCode.OK, ""


@pytest.mark.parametrize("method,name,payload", CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_undecodable_message_is_invalid_argument_without_traceback(
    server, caplog: pytest.LogCaptureFixture, method: str, name: str, payload: bytes
) -> None:
    with caplog.at_level(logging.INFO):
        code, details = run(_raw_call(server.target, method, payload))
    assert code == INVALID, (code, details)
    assert "cannot decode" in details and "Unexpected" not in details, details
    logged = [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]
    assert not logged, [r.getMessage() for r in logged]


def test_still_serving_after_undecodable_messages(server) -> None:
    for payload in UNDECODABLE.values():
        assert run(_raw_call(server.target, INFER, payload))[0] == INVALID
    code, details = run(_raw_call(server.target, INFER, _VALID))
    assert code == grpc.StatusCode.OK, details


async def _stubs(target: str, fn):
    async with grpc.aio.insecure_channel(target) as ch:
        return await fn(Stubs(ch))


@pytest.mark.parametrize(
    "make,code",
    [
        (lambda big: infer_request(images(1, seed=0), model=big), grpc.StatusCode.NOT_FOUND),
        (lambda big: infer_request(images(1, seed=0), outputs=[big]), INVALID),
        (lambda big: infer_request(images(1, seed=0), name=big), INVALID),
    ],
    ids=["model_name", "output_name", "input_name"],
)
def test_long_client_text_is_cut_in_the_message(server, make, code) -> None:
    """A 10 KB name gets its own status (not RESOURCE_EXHAUSTED "metadata size exceeds limit")
    with a message of bounded length."""
    big = "m" * 10_000
    details = run(_stubs(server.target, lambda s: expect_error(s.oip.ModelInfer(make(big)), code)))
    assert len(details) <= MAX_MESSAGE + 20, len(details)
    assert "…" in details, details


def test_long_model_name_message_says_what_is_served(server) -> None:
    details = run(
        _stubs(
            server.target,
            lambda s: expect_error(
                s.guard.GetInfo(gpb.InfoRequest(model_name="x" * 10_000)),
                grpc.StatusCode.NOT_FOUND,
            ),
        )
    )
    assert "x" * MAX_ECHO in details and "x" * (MAX_ECHO + 1) not in details, details
    assert "10000 characters" in details and repr(MODEL) in details, details


def test_duplicate_output_names_are_refused(server) -> None:
    req = infer_request(images(1, seed=0), outputs=["prediction"] * 2000)
    details = run(_stubs(server.target, lambda s: expect_error(s.oip.ModelInfer(req), INVALID)))
    assert "'prediction'" in details and "more than once" in details, details
    assert len(details) < 300, details
    mixed = infer_request(images(1, seed=0), outputs=["logits", "prediction", "logits"])
    details = run(_stubs(server.target, lambda s: expect_error(s.oip.ModelInfer(mixed), INVALID)))
    assert "'logits'" in details, details


def test_distinct_output_names_still_work(server) -> None:
    req = infer_request(images(2, seed=1), outputs=["prediction", "logits"])
    got = run(_stubs(server.target, lambda s: s.oip.ModelInfer(req)))
    assert [o.name for o in got.outputs] == ["prediction", "logits"]
    assert decode(got)["logits"].shape[0] == 2
    assert isinstance(got, pb.ModelInferResponse)
