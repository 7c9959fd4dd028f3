"""The HTTP transport's stop (503 like gRPC's UNAVAILABLE, in-flight requests answered), the
access log of both transports (text and JSON), and TLS + bearer tokens on the HTTP port."""

from __future__ import annotations

import http.client
import json
import logging
import ssl
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from guard.errors import InputError
from server.accesslog import JsonFormatter
from server.shutdown import CUT, SHUTTING_DOWN

from ..helpers import INPUT_NAME, MODEL, images
from ..security_pki import HAVE_OPENSSL, make_pki
from .rest import call, infer, json_request, triton_http_client


# ---------------------------------------------------------------- stop
def test_stop_answers_in_flight_and_refuses_new(make_server):
    st = make_server(http_port=0, slow_s=0.5, max_queue_delay_ms=0.0)
    port = st.http_port
    with ThreadPoolExecutor(3) as pool:
        in_flight = [pool.submit(infer, port, json_request(images(1, 60 + i))) for i in range(3)]
        while not st.batches or st.srv.http.in_flight < 3:  # all accepted, one batch running
            time.sleep(0.005)
        stopping = st.submit(st.srv.stop(grace=5))
        while st.srv.ready:
            time.sleep(0.005)
        refused = infer(port, json_request(images(1, 70)))
        live = call(port, "GET", "/v2/health/live")
        ready = call(port, "GET", "/v2/health/ready")
        replies = [f.result() for f in in_flight]
        stopping.result(30)
    assert refused.status == 503 and refused.error == SHUTTING_DOWN  # the gRPC gate's text
    assert live.status == 200 and ready.status == 400
    assert [r.status for r in replies] == [200, 200, 200]


def test_requests_running_at_the_end_of_the_grace_get_503(make_server):
    st = make_server(http_port=0, slow_s=1.5, max_queue_delay_ms=0.0)
    with ThreadPoolExecutor(2) as pool:
        calls = [pool.submit(infer, st.http_port, json_request(images(1, 80 + i))) for i in (0, 1)]
        while not st.batches or st.srv.http.in_flight < 2:
            time.sleep(0.005)
        t0 = time.perf_counter()
        stopping = st.submit(st.srv.stop(grace=0.3))
        replies = [c.result() for c in calls]
        elapsed = time.perf_counter() - t0
        stopping.result(30)
    for r in replies:
        assert r.status == 503 and r.error == CUT.format(grace=0.3), r.body
    assert elapsed < 1.2  # answered at the end of the grace, not when the batch ends


# ---------------------------------------------------------------- access log
def _access(caplog, transport: str) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.name == "server.access" and getattr(r, "access", {}).get("transport") == transport
    ]


def test_access_log_lines_of_both_transports(server, caplog):
    x = images(4, seed=90)
    with caplog.at_level(logging.DEBUG, logger="server.access"):
        assert infer(server.http_port, json_request(x)).status == 200
        assert infer(server.http_port, json_request(x, ["nope"])).status == 400
        assert call(server.http_port, "GET", "/v2/health/live").status == 200
        g = grpcclient.InferenceServerClient(server.target)
        inp = grpcclient.InferInput(INPUT_NAME, list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        flags = g.infer(MODEL, [inp]).as_numpy("flags")
        with pytest.raises(InferenceServerException):
            g.infer("nope", [inp])
        g.close()
        deadline = time.monotonic() + 5  # a refused call's line follows its status
        while len(_access(caplog, "grpc")) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
    http_lines = _access(caplog, "http")
    ok, bad, live = http_lines[-3:]
    assert ok.levelno == logging.INFO and live.levelno == logging.DEBUG
    a = ok.access  # type: ignore[attr-defined]
    assert (a["rpc"], a["model"], a["images"], a["status"], a["http_status"]) == (
        "ModelInfer",
        MODEL,
        4,
        "OK",
        200,
    )
    assert a["latency_ms"] > 0
    for key in ("abstain", "adversarial", "ood", "ambiguous"):
        assert isinstance(a[key], int) and 0 <= a[key] <= 4
    assert bad.access["status"] == "INVALID_ARGUMENT" and bad.access["http_status"] == 400  # type: ignore[attr-defined]
    assert live.access["rpc"] == "ServerLive"  # type: ignore[attr-defined]
    text = ok.getMessage()
    assert text.startswith(f"transport=http rpc=ModelInfer model={MODEL} images=4 status=OK")
    assert len(text) < 300  # no tensor data
    gok, gbad = _access(caplog, "grpc")[-2:]
    ga = gok.access  # type: ignore[attr-defined]
    assert (ga["rpc"], ga["model"], ga["images"], ga["status"]) == ("ModelInfer", MODEL, 4, "OK")
    assert ga["adversarial"] == int(np.count_nonzero(flags & 1))
    assert ga["ood"] == int(np.count_nonzero(flags & 2))
    assert gbad.access["status"] == "NOT_FOUND"  # type: ignore[attr-defined]
    # JSON: one object per line, the access fields as keys
    doc = json.loads(JsonFormatter().format(ok))
    assert doc["logger"] == "server.access" and doc["level"] == "INFO"
    assert {k: doc[k] for k in a} == a


def test_log_format_setting():
    from server.settings import Settings

    assert Settings.from_env({"GUARD_LOG_FORMAT": "json"}).log_format == "json"
    assert Settings().log_format == "text"
    with pytest.raises(InputError, match="log_format"):
        Settings.from_env({"GUARD_LOG_FORMAT": "xml"})
    assert Settings.from_env({"GUARD_HTTP_PORT": "-1"}).http_port == -1
    assert Settings().http_port == 8000


def test_http_off(make_server):
    st = make_server()  # http_port -1
    assert st.srv.http is None and st.http_port == -1


# ---------------------------------------------------------------- TLS and tokens
@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    if not HAVE_OPENSSL:
        pytest.skip("openssl not installed")
    return make_pki(tmp_path_factory.mktemp("http-pki"))


def test_tokens_on_http(make_server, pki, caplog):
    token = pki.read("tokens.txt").decode().split()[0]
    st = make_server(http_port=0, auth_token_file=pki.path("tokens.txt"))
    port = st.http_port
    body = json_request(images(1, 95))
    with caplog.at_level(logging.DEBUG):
        assert call(port, "GET", "/v2/health/live").status == 200  # probes: open
        assert call(port, "GET", "/v2/health/ready").status == 200
        for path in ("/v2", f"/v2/models/{MODEL}", f"/v2/models/{MODEL}/ready"):
            r = call(port, "GET", path)
            assert r.status == 401 and "missing credentials" in r.error, path
            assert r.headers["www-authenticate"] == "Bearer"
        r = infer(port, body, {"Authorization": "Bearer wrong"})
        assert r.status == 401 and r.error == "invalid token"
        r = infer(port, body, {"Authorization": f"Bearer {token}"})
        assert r.status == 200, r.body
    assert all(token not in rec.getMessage() for rec in caplog.records)
    client = triton_http_client(f"127.0.0.1:{port}")
    inp = httpclient.InferInput(INPUT_NAME, [1, 1, 6, 6], "FP32")
    inp.set_data_from_numpy(images(1, 96))
    res = client.infer(MODEL, [inp], headers={"Authorization": f"Bearer {token}"})
    assert res.as_numpy("prediction").shape == (1,)
    client.close()


def test_tls_on_http(make_server, pki):
    st = make_server(http_port=0, tls_cert=pki.path("server.crt"), tls_key=pki.path("server.key"))
    ctx = ssl.create_default_context(cafile=pki.path("ca.crt"))
    r = call(st.http_port, "GET", "/v2/health/ready", context=ctx)
    assert r.status == 200
    assert infer(st.http_port, json_request(images(1, 97)), context=ctx).status == 200
    with pytest.raises((OSError, http.client.HTTPException)):  # plaintext: no HTTP answer
        call(st.http_port, "GET", "/v2/health/ready")
