"""Model versions: the served model has exactly one, "1"; an empty version means it. Any other
version is NOT_FOUND (ModelInfer, ModelMetadata) and not ready (ModelReady)."""

from __future__ import annotations

import grpc
import pytest

from server.dataplane.model import VERSION, ServedModel
from server.errors import ModelNotFound
from server.grpc.gen.inference import grpc_service_pb2 as pb

from ..helpers import MODEL, Stubs, expect_error, images, infer_request, run

NOT_FOUND = grpc.StatusCode.NOT_FOUND


async def _stubs(target: str, fn):
    async with grpc.aio.insecure_channel(target) as ch:
        return await fn(Stubs(ch))


def test_served_model_knows_its_versions(guard) -> None:
    m = ServedModel(guard, MODEL)
    for v in ("", VERSION):
        m.check_name(MODEL, version=v)
        assert m.serves(MODEL, v)
    for v in ("2", "0", "latest", " 1"):
        with pytest.raises(ModelNotFound, match="version"):
            m.check_name(MODEL, version=v)
        assert not m.serves(MODEL, v)
    assert not m.serves("other", "")


@pytest.mark.parametrize("version", ["", "1"])
def test_infer_with_the_version(server, version: str) -> None:
    req = infer_request(images(1, seed=0), outputs=["prediction"])
    req.model_version = version
    resp = run(_stubs(server.target, lambda s: s.oip.ModelInfer(req)))
    assert resp.model_version == VERSION


@pytest.mark.parametrize("version", ["2", "latest", "v" * 5000])
def test_unknown_version_is_not_found_and_not_ready(server, version: str) -> None:
    req = infer_request(images(1, seed=0), outputs=["prediction"])
    req.model_version = version

    async def go(s: Stubs):
        details = await expect_error(s.oip.ModelInfer(req), NOT_FOUND)
        await expect_error(
            s.oip.ModelMetadata(pb.ModelMetadataRequest(name=MODEL, version=version)), NOT_FOUND
        )
        ready = await s.oip.ModelReady(pb.ModelReadyRequest(name=MODEL, version=version))
        ok = await s.oip.ModelReady(pb.ModelReadyRequest(name=MODEL, version=VERSION))
        return details, ready.ready, ok.ready

    details, ready, ok = run(_stubs(server.target, go))
    assert "version" in details and len(details) < 400, details
    assert not ready and ok
