"""Upstream mode without a Triton: the checks against independent computations, the settings,
the error table's rows, and the proxy against upstreams that are down or are not the artifact's
model (another Guard server, which speaks the same protocol but has no ``features`` output).

The real Triton Inference Server is in ``test_triton.py``."""

from __future__ import annotations

import time
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as tc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tritonclient.utils import InferenceServerException

from guard import Guard
from guard.errors import InputError
from server import demo
from server.errors import (
    Code,
    UpstreamError,
    UpstreamMismatch,
    UpstreamTimeout,
    UpstreamUnavailable,
    code_of,
)
from server.settings import Settings
from server.upstream.check import check_affine, check_reference
from server.upstream.launcher import free_port
from tests.server.helpers import MODEL, ServerThread, images, sample, scrape


# ---------------------------------------------------------------- the checks
def test_check_affine_accepts_the_model_and_refuses_another_head(guard: Guard) -> None:
    x = images(40, seed=5)
    logits, feats = guard.require_model().run(x)
    check_affine(guard, logits, feats, 1e-4)  # the model itself
    # the independent computation: every image's worst error relative to its largest logit
    recon = feats.astype(np.float64) @ guard.W_.T + guard.b_
    err = np.abs(recon - logits).max(axis=1) / np.maximum(1, np.abs(logits).max(axis=1))
    assert err.max() < 1e-5
    other = logits.copy()
    other[7, 2] += 0.05 * max(1.0, float(np.abs(logits[7]).max()))  # one image, 5% off
    with pytest.raises(UpstreamMismatch, match=r"1 of 40 images.*not the one"):
        check_affine(guard, other, feats, 1e-3)
    check_affine(guard, other, feats, 0.06)  # within a loose tolerance
    with pytest.raises(UpstreamMismatch, match="classes"):
        check_affine(guard, logits[:, :3], feats, 1e-3)
    nan = logits.copy()
    nan[3] = np.nan  # a non-finite row is its own request's error, not a mismatch
    check_affine(guard, nan, feats, 1e-4)


def test_check_reference(guard: Guard) -> None:
    assert guard.reference_inputs_ is not None
    logits, feats = guard.require_model().run(guard.reference_inputs_)
    check_reference(guard, logits, feats, 1e-5)
    with pytest.raises(UpstreamMismatch, match="features on the .* reference inputs differ"):
        check_reference(guard, logits, feats * 1.01, 1e-3)
    with pytest.raises(UpstreamMismatch, match="shape"):
        check_reference(guard, logits[:, :4], feats, 1e-3)


# ---------------------------------------------------------------- settings and errors
def test_settings() -> None:
    s = Settings.from_env({"GUARD_UPSTREAM": "triton:8001", "GUARD_UPSTREAM_TIMEOUT_S": "2.5"})
    assert s.upstream == "triton:8001" and s.upstream_timeout_s == 2.5
    assert s.upstream_model is None and s.upstream_poll_s == 1.0 and s.upstream_rtol == 1e-3
    assert Settings.from_env({}).upstream is None  # in-process by default
    assert Settings.from_env({}, upstream="[::1]:8001").upstream == "[::1]:8001"
    for bad in ("triton", "triton:", ":8001", "triton:http", "triton:0", "triton:70000"):
        with pytest.raises(InputError, match="HOST:PORT"):
            Settings.from_env({}, upstream=bad)
    with pytest.raises(InputError, match="upstream_timeout_s"):
        Settings.from_env({"GUARD_UPSTREAM_TIMEOUT_S": "0"})
    with pytest.raises(InputError, match="upstream_rtol"):
        Settings.from_env({}, upstream_rtol=1.5)


@pytest.mark.parametrize(
    "exc,code,http",
    [
        (UpstreamUnavailable("x"), "UNAVAILABLE", 503),
        (UpstreamTimeout("x"), "DEADLINE_EXCEEDED", 504),
        (UpstreamMismatch("x"), "FAILED_PRECONDITION", 400),
        (UpstreamError("x"), "UNAVAILABLE", 503),
    ],
)
def test_error_table(exc: Exception, code: str, http: int) -> None:
    assert code_of(exc).grpc_name == code and code_of(exc).http_status == http
    assert grpc.StatusCode[Code.DEADLINE_EXCEEDED.grpc_name] == grpc.StatusCode.DEADLINE_EXCEEDED


# ---------------------------------------------------------------- upstreams that cannot serve
def _health(port: int) -> int:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        return health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest()).status


def test_upstream_down_at_start_serves_not_ready_and_fails_fast(guard: Guard) -> None:
    port = free_port()  # nothing listens there
    st = ServerThread(
        guard,
        Settings(
            port=0,
            http_port=-1,
            metrics_port=0,
            upstream=f"127.0.0.1:{port}",
            upstream_model=MODEL,
            upstream_poll_s=0.1,
        ),
    )
    try:
        assert _health(st.port) == health_pb2.HealthCheckResponse.NOT_SERVING
        client = tc.InferenceServerClient(st.target)
        assert not client.is_server_ready() and not client.is_model_ready(MODEL)
        assert client.is_server_live()
        inp = tc.InferInput("x", [2, 1, 6, 6], "FP32")
        inp.set_data_from_numpy(images(2, seed=1))
        t0 = time.monotonic()
        with pytest.raises(InferenceServerException) as info:
            client.infer(MODEL, [inp], client_timeout=10)
        assert time.monotonic() - t0 < 2  # refused at once, no hang
        assert info.value.status() == "StatusCode.UNAVAILABLE"
        assert f"127.0.0.1:{port}" in info.value.message() and "not serving" in info.value.message()
        samples = scrape(st.metrics_port)
        assert sample(samples, "guard_upstream_errors_total", code="UNAVAILABLE") == 1
        assert sample(samples, "guard_requests_total", rpc="ModelInfer", outcome="unavailable") == 1
    finally:
        st.stop()


def test_an_upstream_without_the_features_output_is_refused_at_start(guard: Guard) -> None:
    """Another server of the protocol (a Guard in-process) has the model, but no ``features``
    output: it refuses the request (INVALID_ARGUMENT), which is a mismatch, so the proxy does not
    start."""
    inner = ServerThread(guard, Settings(port=0, http_port=-1, metrics_port=-1))
    try:
        with pytest.raises(UpstreamMismatch, match=r"INVALID_ARGUMENT.*features"):
            ServerThread(
                guard,
                Settings(
                    port=0,
                    http_port=-1,
                    metrics_port=-1,
                    upstream=inner.target,
                    upstream_model=MODEL,
                ),
            )
    finally:
        inner.stop()


def test_demo_upstream_without_the_triton_env_names_the_make_target(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setenv("GUARD_TRITON_PYTHON", str(tmp_path / "no-such-python"))
    assert demo.main(["--upstream", "--artifact", str(tmp_path / "artifact")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("guard demo: error: the Triton env is missing") and "make triton" in err
