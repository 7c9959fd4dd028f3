"""TLS, mutual TLS and bearer tokens on the gRPC port, with real clients (grpc.aio secure
channels and the unmodified tritonclient) against in-process servers on port 0.

Certificates come from the README's own openssl block (:mod:`.security_pki`), run twice: the
second run is an unrelated CA whose certificates must be refused.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as tc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2
from tritonclient.utils import InferenceServerException

from server.grpc.gen.guard_v1 import guard_pb2 as gpb
from server.grpc.gen.inference import grpc_service_pb2 as pb
from server.security import BAD_SCHEME, BAD_TOKEN, MISSING

from .helpers import (
    INPUT_NAME,
    MODEL,
    ServerThread,
    Stubs,
    classify_request,
    expect_error,
    images,
    infer_request,
    run,
    sample,
    scrape,
)
from .security_pki import HAVE_OPENSSL, Pki, make_pki

pytestmark = pytest.mark.skipif(not HAVE_OPENSSL, reason="needs the openssl command")

TIMEOUT = 10.0
OIP = "inference.GRPCInferenceService"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def other(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """An unrelated CA (and a server and client certificate it signed)."""
    return make_pki(tmp_path_factory.mktemp("other-pki"))


def token_of(pki: Pki) -> str:
    return pki.read("tokens.txt").decode().split()[0]


def tls_settings(pki: Pki, mutual: bool = False) -> dict[str, object]:
    kw: dict[str, object] = {
        "host": "127.0.0.1",
        "tls_cert": pki.path("server.crt"),
        "tls_key": pki.path("server.key"),
    }
    if mutual:
        kw["tls_client_ca"] = pki.path("ca.crt")
    return kw


def secure(
    st: ServerThread, ca: Pki, client: Pki | None = None
) -> grpc.aio.Channel:  # trusting ``ca``, presenting ``client``'s certificate
    creds = grpc.ssl_channel_credentials(
        root_certificates=ca.read("ca.crt"),
        private_key=client.read("client.key") if client else None,
        certificate_chain=client.read("client.crt") if client else None,
    )
    return grpc.aio.secure_channel(st.target, creds)


async def _infer_ok(channel: grpc.aio.Channel, metadata: tuple = ()) -> None:
    x = images(2, seed=1)
    stubs = Stubs(channel)
    resp = await stubs.oip.ModelInfer(infer_request(x), timeout=TIMEOUT, metadata=metadata)
    assert [o.name for o in resp.outputs] and resp.model_name == MODEL


def _refused(channel_factory: Callable[[], grpc.aio.Channel]) -> grpc.StatusCode:
    async def go() -> grpc.StatusCode:
        async with channel_factory() as ch:
            try:
                await Stubs(ch).oip.ServerLive(pb.ServerLiveRequest(), timeout=TIMEOUT)
            except grpc.aio.AioRpcError as exc:
                return exc.code()
        raise AssertionError("the call succeeded")

    return run(go())


def _triton_infer(client: tc.InferenceServerClient, headers: dict | None = None) -> np.ndarray:
    x = images(3, seed=2)
    inp = tc.InferInput(INPUT_NAME, list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    return client.infer(MODEL, [inp], headers=headers).as_numpy("prediction")


# ---------------------------------------------------------------- TLS
def test_tls_clients_work_and_plaintext_fails(make_server, pki, other):
    st = make_server(**tls_settings(pki))

    async def go() -> None:
        async with secure(st, pki) as ch:
            await _infer_ok(ch)
            health = health_pb2_grpc.HealthStub(ch)
            resp = await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=TIMEOUT)
            assert resp.status == health_pb2.HealthCheckResponse.SERVING

    run(go())
    client = tc.InferenceServerClient(st.target, ssl=True, root_certificates=pki.path("ca.crt"))
    try:
        assert client.is_server_live() and _triton_infer(client).shape == (3,)
    finally:
        client.close()
    # a plaintext client, and a client that trusts another CA, do not get through
    assert _refused(lambda: grpc.aio.insecure_channel(st.target)) == grpc.StatusCode.UNAVAILABLE
    assert _refused(lambda: secure(st, other)) == grpc.StatusCode.UNAVAILABLE


def test_mutual_tls(make_server, pki, other):
    st = make_server(**tls_settings(pki, mutual=True))

    async def go() -> None:
        async with secure(st, pki, client=pki) as ch:
            await _infer_ok(ch)

    run(go())
    client = tc.InferenceServerClient(
        st.target,
        ssl=True,
        root_certificates=pki.path("ca.crt"),
        private_key=pki.path("client.key"),
        certificate_chain=pki.path("client.crt"),
    )
    try:
        assert _triton_infer(client).shape == (3,)
    finally:
        client.close()
    unavailable = grpc.StatusCode.UNAVAILABLE
    assert _refused(lambda: secure(st, pki)) == unavailable  # no client certificate
    assert _refused(lambda: secure(st, pki, client=other)) == unavailable  # another CA's
    assert _refused(lambda: grpc.aio.insecure_channel(st.target)) == unavailable
    # tritonclient without a client certificate is refused as well
    bare = tc.InferenceServerClient(st.target, ssl=True, root_certificates=pki.path("ca.crt"))
    try:
        with pytest.raises(InferenceServerException):
            _triton_infer(bare)
    finally:
        bare.close()


# ---------------------------------------------------------------- bearer tokens
def write_tokens(path: Path, *tokens: str, atomic: bool = True) -> None:
    text = "# guard tokens\n\n" + "".join(f"  {t}  \n" for t in tokens)
    if atomic:
        tmp = path.with_suffix(".new")
        tmp.write_text(text)
        os.replace(tmp, path)
    else:
        path.write_text(text)


@pytest.fixture()
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "tokens.txt"
    write_tokens(path, "alpha-0123456789", "beta-0123456789")
    path.chmod(0o600)
    return path


def bearer(token: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {token}"),)


def test_tokens_guard_every_rpc_but_the_probes(make_server, token_file, caplog):
    caplog.set_level(logging.DEBUG)
    st = make_server(auth_token_file=str(token_file), metrics_port=0)
    x = images(2, seed=3)
    code = grpc.StatusCode.UNAUTHENTICATED

    async def go() -> dict[str, str]:
        details = {}
        async with grpc.aio.insecure_channel(st.target) as ch:
            s = Stubs(ch)
            calls = {
                "ModelInfer": lambda md: s.oip.ModelInfer(infer_request(x), metadata=md),
                "ModelMetadata": lambda md: s.oip.ModelMetadata(
                    pb.ModelMetadataRequest(name=MODEL), metadata=md
                ),
                "ServerMetadata": lambda md: s.oip.ServerMetadata(
                    pb.ServerMetadataRequest(), metadata=md
                ),
                "ModelReady": lambda md: s.oip.ModelReady(
                    pb.ModelReadyRequest(name=MODEL), metadata=md
                ),
                "Classify": lambda md: s.guard.Classify(classify_request(x), metadata=md),
                "GetInfo": lambda md: s.guard.GetInfo(gpb.InfoRequest(), metadata=md),
            }
            for name, call in calls.items():
                details[name] = await expect_error(call(()), code)
                await expect_error(call(bearer("wrong-token-xyz")), code)
                await expect_error(call((("authorization", "Basic alpha-0123456789"),)), code)
                await call(bearer("alpha-0123456789"))  # either token of the file works
                await call((("authorization", "bearer   beta-0123456789"),))
            details["wrong"] = await expect_error(
                s.oip.ModelInfer(infer_request(x), metadata=bearer("wrong-token-xyz")), code
            )
            details["scheme"] = await expect_error(
                s.oip.ModelInfer(infer_request(x), metadata=(("authorization", "Bearer"),)), code
            )
            # the probes need no token
            assert (await s.oip.ServerLive(pb.ServerLiveRequest())).live
            assert (await s.oip.ServerReady(pb.ServerReadyRequest())).ready
            health = health_pb2_grpc.HealthStub(ch)
            for service in ("", OIP):
                resp = await health.Check(health_pb2.HealthCheckRequest(service=service))
                assert resp.status == health_pb2.HealthCheckResponse.SERVING
        return details

    details = run(go())
    assert all(details[n] == MISSING for n in ("ModelInfer", "Classify", "GetInfo")), details
    assert details["wrong"] == BAD_TOKEN and details["scheme"] == BAD_SCHEME
    samples = scrape(st.metrics_port)
    assert sample(samples, "guard_requests_total", rpc="ModelInfer", outcome="unauthenticated") == 5
    assert sample(samples, "guard_requests_total", rpc="ModelInfer", outcome="ok") == 2
    # neither the tokens nor the presented values reach the log
    for secret in ("alpha-0123456789", "beta-0123456789", "wrong-token-xyz"):
        assert secret not in caplog.text


def test_tritonclient_sends_the_token(make_server, pki):
    """TLS and tokens together, as in the README: the token header with tritonclient."""
    st = make_server(auth_token_file=pki.path("tokens.txt"), **tls_settings(pki))
    client = tc.InferenceServerClient(st.target, ssl=True, root_certificates=pki.path("ca.crt"))
    try:
        assert client.is_server_live() and client.is_server_ready()  # probes: no token
        with pytest.raises(InferenceServerException) as info:
            _triton_infer(client)
        assert info.value.status() == "StatusCode.UNAUTHENTICATED", info.value
        with pytest.raises(InferenceServerException):
            _triton_infer(client, headers={"authorization": "Bearer not-the-token"})
        got = _triton_infer(client, headers={"authorization": f"Bearer {token_of(pki)}"})
        assert got.shape == (3,)
    finally:
        client.close()


def test_token_file_changes_apply_to_the_next_request(make_server, token_file):
    st = make_server(auth_token_file=str(token_file))
    ok, refused = [], []

    async def attempt(ch: grpc.aio.Channel, token: str) -> bool:
        try:
            await Stubs(ch).guard.GetInfo(gpb.InfoRequest(), metadata=bearer(token))
        except grpc.aio.AioRpcError as exc:
            assert exc.code() == grpc.StatusCode.UNAUTHENTICATED
            return False
        return True

    async def go() -> None:
        async with grpc.aio.insecure_channel(st.target) as ch:
            assert await attempt(ch, "alpha-0123456789")
            write_tokens(token_file, "gamma-0123456789")  # atomic rename
            ok.append(await attempt(ch, "gamma-0123456789"))
            refused.append(await attempt(ch, "alpha-0123456789"))
            write_tokens(token_file, "delta-0123456789", atomic=False)  # same size, in place
            ok.append(await attempt(ch, "delta-0123456789"))
            refused.append(await attempt(ch, "gamma-0123456789"))
            token_file.unlink()  # gone: fail closed
            refused.append(await attempt(ch, "delta-0123456789"))
            write_tokens(token_file, "")  # no token: fail closed
            refused.append(await attempt(ch, "delta-0123456789"))
            write_tokens(token_file, "delta-0123456789")  # fixed
            ok.append(await attempt(ch, "delta-0123456789"))

    run(go())
    assert ok == [True, True, True] and refused == [False, False, False, False]


# ---------------------------------------------------------------- reflection defaults
REFLECTION = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"


async def _reflection_on(ch: grpc.aio.Channel, metadata: tuple = ()) -> grpc.StatusCode:
    """List the services through reflection; the call's status (OK: our services listed).

    Sent as one request + half-close (a unary call on the streaming method): a streaming client
    that writes after the server answered UNIMPLEMENTED sees a client-side INTERNAL instead.
    """
    list_services = ch.unary_unary(
        REFLECTION,
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )
    try:
        resp = await list_services(
            reflection_pb2.ServerReflectionRequest(list_services=""),
            metadata=metadata,
            timeout=TIMEOUT,
        )
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    assert OIP in {s.name for s in resp.list_services_response.service}
    return grpc.StatusCode.OK


def _reflection_code(st: ServerThread, metadata: tuple = ()) -> grpc.StatusCode:
    async def go() -> grpc.StatusCode:
        async with grpc.aio.insecure_channel(st.target) as ch:
            return await _reflection_on(ch, metadata)

    return run(go())


def test_reflection_is_off_with_auth_unless_forced(make_server, token_file):
    off = make_server(auth_token_file=str(token_file))
    assert _reflection_code(off, bearer("alpha-0123456789")) == grpc.StatusCode.UNIMPLEMENTED
    on = make_server(auth_token_file=str(token_file), reflection=True)
    assert _reflection_code(on) == grpc.StatusCode.UNAUTHENTICATED
    assert _reflection_code(on, bearer("alpha-0123456789")) == grpc.StatusCode.OK
    plain_off = make_server(reflection=False)
    assert _reflection_code(plain_off) == grpc.StatusCode.UNIMPLEMENTED


def test_reflection_is_off_with_tls(make_server, pki):
    st = make_server(**tls_settings(pki))

    async def go() -> grpc.StatusCode:
        async with secure(st, pki) as ch:
            return await _reflection_on(ch)

    assert run(go()) == grpc.StatusCode.UNIMPLEMENTED


# ---------------------------------------------------------------- bind addresses
def test_metrics_host_and_host(make_server):
    st = make_server(host="127.0.0.1", metrics_port=0, metrics_host="127.0.0.1")
    assert st.srv.metrics._http is not None
    assert st.srv.metrics._http.server_address[0] == "127.0.0.1"
    assert ("guard_images_total", frozenset()) in scrape(st.metrics_port)

    async def go() -> None:
        async with grpc.aio.insecure_channel(st.target) as ch:
            await _infer_ok(ch)

    run(go())
