"""Guard as a proxy in front of a REAL Triton Inference Server (upstream mode), with the
unmodified ``tritonclient`` in front of Guard.

One Triton per module (start-up takes 10-20 s): PyTriton's ``tritonserver`` in ``.venv-triton``
serves the ``guard export triton`` entry of a small artifact of the built-in model, plus models
that are not the artifact's (another head, another backbone, 8 classes) and one that switches to
another head when a file appears. The tests check that the export is what Triton serves, that
answers through the proxy equal the in-process mode's on 1,000 real Fashion-MNIST test images,
that the wrong models are refused at start, that a model switched behind the proxy fails its
batch, and that a hung, killed and restarted upstream gives DEADLINE_EXCEEDED / UNAVAILABLE,
health NOT_SERVING, no hang, and service again without restarting Guard. The kill test runs
last (it restarts the shared Triton).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import onnx
import pytest
import tritonclient.grpc as tc
import tritonclient.http as th
from grpc_health.v1 import health_pb2, health_pb2_grpc
from onnx import numpy_helper
from tritonclient.utils import InferenceServerException

from guard import Guard, OnnxClassifier, save_artifact
from guard.datasets import (
    DEFAULT_FASHION_MNIST_ROOT,
    FASHION_MNIST_CLASSES,
    as_model_input,
    load_fashion_mnist,
)
from guard.defaults import DEFAULT_MODEL
from guard.model.triton import export_triton
from server import cli
from server.errors import UpstreamMismatch
from server.settings import Settings
from tests.server.helpers import ServerThread, sample, scrape
from tests.tools import require_path

from .triton import ROOT, TritonHost, require_triton

NAME = "fmnist"
OUTPUTS = ["logits", "prediction", "abstain", "flags", "margin_min", "hull_distance", "p_value"]
EIGHT_CLASSES = ROOT / "guard" / "assets" / "fmnist_resnet_8cls.onnx"
#: Another architecture: ResNet-20, 3x32x32 inputs (grey Fashion-MNIST padded, channel repeated).
RGB = ROOT / "guard" / "assets" / "fmnist_resnet20_rgb.onnx"


def to_rgb32(x: np.ndarray) -> np.ndarray:
    """[N, 1, 28, 28] -> [N, 3, 32, 32], as ``guard.model.nets.to_rgb32`` (without torch)."""
    return np.ascontiguousarray(np.pad(x, ((0, 0), (0, 0), (2, 2), (2, 2))).repeat(3, axis=1))


OK = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@dataclass
class Upstream:
    guard: Guard
    artifact: Path
    repo: Path
    triton: TritonHost
    switch: Path
    test_x: np.ndarray


def _perturbed(src: Path, dst: Path, name: str, op_type: str, seed: int) -> None:
    """A copy of entry ``src`` as ``dst`` (named ``name``) whose first ``op_type`` node's
    weight is perturbed by 5%: the same graph with other weights."""
    shutil.copytree(src, dst)
    model = onnx.load(str(dst / "1" / "model.onnx"))
    node = next(n for n in model.graph.node if n.op_type == op_type)
    init = next(t for t in model.graph.initializer if t.name == node.input[1])
    w = numpy_helper.to_array(init)
    rng = np.random.default_rng(seed)
    w = w + 0.05 * np.abs(w).max() * rng.standard_normal(w.shape).astype(w.dtype)
    init.CopyFrom(numpy_helper.from_array(w, init.name))
    onnx.save(model, str(dst / "1" / "model.onnx"))
    config = (dst / "config.pbtxt").read_text().replace(f'name: "{src.name}"', f'name: "{name}"')
    (dst / "config.pbtxt").write_text(config)


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Upstream]:
    require_triton()
    require_path(
        DEFAULT_FASHION_MNIST_ROOT / "t10k-images-idx3-ubyte.gz",
        "install Debian's dataset-fashion-mnist (`make apt`)",
    )
    tmp = tmp_path_factory.mktemp("upstream")
    x, y = load_fashion_mnist("train")
    repo = tmp / "repo"
    # the export needs only the model (its check inputs: any real images), so Triton starts
    # while the guard is fitted
    export_triton(OnnxClassifier(DEFAULT_MODEL), repo, NAME, as_model_input(x[-8:]))
    _perturbed(repo / NAME, repo / "wrong_head", "wrong_head", "Gemm", seed=1)
    _perturbed(repo / NAME, repo / "wrong_backbone", "wrong_backbone", "Conv", seed=2)
    _perturbed(repo / NAME, repo / "switchable", "switchable", "Gemm", seed=3)
    shutil.copy(repo / NAME / "1" / "model.onnx", repo / "switchable" / "1" / "model.onnx")
    export_triton(
        OnnxClassifier(EIGHT_CLASSES), repo, "eight_classes", as_model_input(x[:4])
    )  # another model, 8 classes
    export_triton(OnnxClassifier(RGB), repo, "rgb", to_rgb32(as_model_input(x[:4])))
    switch = tmp / "switch"
    triton = TritonHost(
        repo,
        models=[
            NAME,
            "wrong_head",
            "wrong_backbone",
            "eight_classes",
            "rgb",
            "switchable=wrong_head",
        ],
        switch_file=switch,
        log=tmp / "triton.log",
    ).launch()
    try:
        guard = Guard(calib_fraction=0.1).fit(
            OnnxClassifier(DEFAULT_MODEL),
            as_model_input(x[:2000]),
            y[:2000],
            class_names=list(FASHION_MNIST_CLASSES),
        )
        artifact = save_artifact(guard, tmp / "fmnist")
        test_x, _ = load_fashion_mnist("test")
        triton.wait()
        yield Upstream(guard, artifact, repo, triton, switch, as_model_input(test_x[:1000]))
    finally:
        triton.kill()


def _proxy(up: Upstream, model: str = NAME, **settings: object) -> ServerThread:
    kw: dict[str, object] = {
        "port": 0,
        "http_port": -1,
        "metrics_port": 0,
        "upstream": up.triton.target,
        "upstream_model": model,
        "upstream_poll_s": 0.2,
    }
    kw.update(settings)
    return ServerThread(up.guard, Settings(**kw), model_name=NAME)


def _infer(client: tc.InferenceServerClient, x: np.ndarray, timeout: float = 30) -> dict:
    inp = tc.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    r = client.infer(
        NAME, [inp], outputs=[tc.InferRequestedOutput(o) for o in OUTPUTS], client_timeout=timeout
    )
    return {o: r.as_numpy(o) for o in OUTPUTS}


def _all(client: tc.InferenceServerClient, x: np.ndarray, step: int = 50) -> dict:
    parts = [_infer(client, x[lo : lo + step]) for lo in range(0, len(x), step)]
    return {o: np.concatenate([p[o] for p in parts]) for o in OUTPUTS}


def _health(port: int) -> int:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        return stub.Check(health_pb2.HealthCheckRequest(), timeout=5).status


def _wait_health(port: int, status: int, timeout: float) -> float:
    t0 = time.monotonic()
    while _health(port) != status:
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"health did not become {status} within {timeout} s")
        time.sleep(0.05)
    return time.monotonic() - t0


def _status(call) -> InferenceServerException:  # type: ignore[no-untyped-def]
    with pytest.raises(InferenceServerException) as info:
        call()
    return info.value


# ---------------------------------------------------------------- the export, served by Triton
def test_triton_serves_the_export_with_both_outputs(up: Upstream) -> None:
    client = tc.InferenceServerClient(up.triton.target)
    assert client.is_server_ready() and client.is_model_ready(NAME)
    x = up.test_x[:16]
    inp = tc.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    r = client.infer(
        NAME,
        [inp],
        outputs=[tc.InferRequestedOutput("logits"), tc.InferRequestedOutput("features")],
    )
    logits, feats = up.guard.require_model().run(x)
    np.testing.assert_allclose(r.as_numpy("logits"), logits, rtol=0, atol=1e-5)
    np.testing.assert_allclose(r.as_numpy("features"), feats, rtol=0, atol=1e-5)
    meta = client.get_model_metadata(NAME)
    assert [o.name for o in meta.outputs] == ["logits", "features"]
    assert [list(o.shape) for o in meta.outputs] == [[-1, 10], [-1, 64]]


# ---------------------------------------------------------------- proxy == in-process
def test_proxy_answers_equal_the_in_process_answers(up: Upstream) -> None:
    """1,000 real test images, tritonclient (gRPC, and HTTP for a part) in front of each."""
    inproc = ServerThread(up.guard, Settings(port=0, http_port=-1, metrics_port=-1), NAME)
    try:
        want = _all(tc.InferenceServerClient(inproc.target), up.test_x)
    finally:
        inproc.stop()
    proxy = _proxy(up, http_port=0)
    try:
        got = _all(tc.InferenceServerClient(proxy.target), up.test_x)
        http = th.InferenceServerClient(proxy.http_url)
        inp = th.InferInput("input", [40, 1, 28, 28], "FP32")
        inp.set_data_from_numpy(up.test_x[:40])
        r = http.infer(NAME, [inp], outputs=[th.InferRequestedOutput(o) for o in OUTPUTS])
        samples = scrape(proxy.metrics_port)
    finally:
        proxy.stop()
    assert len(got["prediction"]) == 1000
    np.testing.assert_allclose(got["logits"], want["logits"], rtol=0, atol=1e-5)
    for name in ("prediction", "abstain", "flags"):  # the decisions: identical
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    for name in ("margin_min", "hull_distance", "p_value"):  # the geometry of equal features
        np.testing.assert_allclose(got[name], want[name], rtol=1e-3, atol=1e-5, err_msg=name)
    for name in OUTPUTS:  # HTTP through the proxy answers what gRPC does
        np.testing.assert_allclose(r.as_numpy(name), got[name][:40], rtol=1e-6, err_msg=name)
    assert sample(samples, "guard_upstream_seconds_count") >= 21  # 20 gRPC + 1 HTTP requests
    assert sample(samples, "guard_images_total") == 1040
    assert not any(k[0] == "guard_upstream_errors_total" for k in samples)


def test_another_architecture_through_the_proxy(up: Upstream) -> None:
    """Any model: ResNet-20 on 3x32x32 inputs, exported and served by the same Triton; 200 real
    test images through the proxy equal the in-process answers."""
    x, y = load_fashion_mnist("train")
    guard = Guard(calib_fraction=0.1).fit(
        OnnxClassifier(RGB), to_rgb32(as_model_input(x[:1200])), y[:1200]
    )
    test_x = to_rgb32(up.test_x[:200])
    want_s = guard.score(test_x)
    want_d = guard.decide(want_s)
    proxy = ServerThread(
        guard,
        Settings(port=0, http_port=-1, metrics_port=-1, upstream=up.triton.target),
        model_name="rgb",
    )
    try:
        client = tc.InferenceServerClient(proxy.target)
        parts = []
        for lo in range(0, len(test_x), 50):
            inp = tc.InferInput("input", [50, 3, 32, 32], "FP32")
            inp.set_data_from_numpy(test_x[lo : lo + 50])
            r = client.infer("rgb", [inp], outputs=[tc.InferRequestedOutput(o) for o in OUTPUTS])
            parts.append({o: r.as_numpy(o) for o in OUTPUTS})
    finally:
        proxy.stop()
    got = {o: np.concatenate([p[o] for p in parts]) for o in OUTPUTS}
    np.testing.assert_allclose(got["logits"], want_s.logits, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(got["prediction"], want_s.pred)
    np.testing.assert_array_equal(got["abstain"], want_d.abstain)
    np.testing.assert_array_equal(got["flags"], want_d.flags)
    np.testing.assert_allclose(got["hull_distance"], want_s.hull_upper, rtol=1e-3, atol=1e-5)


# ---------------------------------------------------------------- the wrong model
@pytest.mark.parametrize(
    "model,why",
    [
        ("wrong_head", "logits on the 8 reference inputs differ"),
        ("wrong_backbone", "features on the 8 reference inputs differ"),
        ("eight_classes", "shape"),
    ],
)
def test_another_model_is_refused_at_start(up: Upstream, model: str, why: str) -> None:
    with pytest.raises(UpstreamMismatch, match=f"{why}.*not the one this artifact was fitted on"):
        _proxy(up, model)


def test_cli_refuses_to_serve_in_front_of_another_model(up: Upstream) -> None:
    res = subprocess.run(
        [sys.executable, "-m", "server", "--artifact", str(up.artifact)]
        + ["--upstream", up.triton.target, "--upstream-model", "wrong_backbone"]
        + ["--port", "0", "--http-port", "-1", "--metrics-port", "-1", "--host", "127.0.0.1"],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=ROOT,
    )
    assert res.returncode == 2, res.stdout + res.stderr
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("guard: error: the upstream's features"), last
    assert "not the one this artifact was fitted on" in last


def test_a_model_switched_behind_the_proxy_fails_its_batch(up: Upstream) -> None:
    """``switchable`` answers with another head once the switch file exists: that batch fails
    FAILED_PRECONDITION (counted), health goes NOT_SERVING, later requests are refused without
    being forwarded, and once the right model is back the proxy serves again by itself."""
    up.switch.unlink(missing_ok=True)
    proxy = _proxy(up, "switchable")
    client = tc.InferenceServerClient(proxy.target)
    x = up.test_x[:8]
    try:
        before = _infer(client, x)
        up.switch.touch()
        err = _status(lambda: _infer(client, x))
        assert err.status() == "StatusCode.FAILED_PRECONDITION"
        # caught by this batch's W·features + b check (or, if a poll came first, by the
        # reference check, and refused without being forwarded)
        assert "not the one this artifact was fitted on" in err.message()
        assert _health(proxy.port) == NOT_SERVING
        assert not client.is_server_ready()
        err = _status(lambda: _infer(client, x))  # refused at once while it is wrong
        assert err.status() == "StatusCode.FAILED_PRECONDITION"
        samples = scrape(proxy.metrics_port)
        assert sample(samples, "guard_upstream_errors_total", code="FAILED_PRECONDITION") == 2
        up.switch.unlink()
        _wait_health(proxy.port, OK, 30)
        after = _infer(client, x)
        np.testing.assert_array_equal(after["logits"], before["logits"])
    finally:
        up.switch.unlink(missing_ok=True)
        proxy.stop()


def test_a_reload_is_checked_against_the_upstream(up: Upstream, tmp_path: Path) -> None:
    """Upstream mode with an artifact directory: a reload of it passes the check through Triton
    (version 2); an artifact of another model (8 classes) is refused, version 2 keeps serving."""
    x, _ = load_fashion_mnist("train")
    other = Guard(calib_fraction=0).fit(OnnxClassifier(EIGHT_CLASSES), as_model_input(x[:300]))
    other_dir = save_artifact(other, tmp_path / "eight")
    settings = Settings(
        artifact=str(up.artifact),
        model_name=NAME,
        port=0,
        http_port=-1,
        metrics_port=-1,
        upstream=up.triton.target,
        upstream_poll_s=0.2,
    )
    proxy = ServerThread(None, settings)  # type: ignore[arg-type]  # None: load settings.artifact
    client = tc.InferenceServerClient(proxy.target)
    try:
        assert proxy.call(proxy.srv.reload()) == 2
        assert proxy.call(proxy.srv.reload(str(other_dir))) is None
        inp = tc.InferInput("input", [4, 1, 28, 28], "FP32")
        inp.set_data_from_numpy(up.test_x[:4])
        result = client.infer(NAME, [inp])
        assert result.get_response().model_version == "2"
        assert result.as_numpy("logits").shape == (4, 10)
    finally:
        proxy.stop()


@pytest.mark.slow
def test_demo_through_a_real_triton(
    up: Upstream, request: pytest.FixtureRequest, capsys: pytest.CaptureFixture
) -> None:
    """``guard demo --upstream``: its own Triton (the exported artifact), Guard in front of it,
    the demo's report. About 40 s: only with ``-m slow``."""
    if "slow" not in (request.config.getoption("markexpr") or ""):
        pytest.skip("starts a Triton and a server (about 40 s): run with -m slow")
    counts = ["--n-fmnist", "32", "--n-digits", "16", "--n-noise", "8", "--n-constant", "3"]
    rc = cli.main(["demo", "--upstream", "--artifact", str(up.artifact), *counts])
    out, err = capsys.readouterr()
    assert rc == 0, out + err
    assert "Triton Inference Server (PyTriton's tritonserver) serving 'fmnist'" in out
    assert "Summary per source" in out and "guard_upstream_seconds_count" in out
    assert "server stopped cleanly on SIGTERM (exit 0)" in out


# ---------------------------------------------------------------- hung, killed, restarted
def test_a_hung_upstream_gives_deadline_exceeded(up: Upstream) -> None:
    proxy = _proxy(up, upstream_timeout_s=1.0)
    client = tc.InferenceServerClient(proxy.target)
    x = up.test_x[:4]
    try:
        _infer(client, x)
        up.triton.freeze()
        t0 = time.monotonic()
        err = _status(lambda: _infer(client, x))
        elapsed = time.monotonic() - t0
        assert err.status() == "StatusCode.DEADLINE_EXCEEDED", err
        assert "did not answer within 1 s" in err.message()
        assert elapsed < 5, elapsed
        _wait_health(proxy.port, NOT_SERVING, 10)  # the probes time out too
        samples = scrape(proxy.metrics_port)
        assert sample(samples, "guard_upstream_errors_total", code="DEADLINE_EXCEEDED") == 1
        up.triton.thaw()
        _wait_health(proxy.port, OK, 60)
        _infer(client, x)
    finally:
        up.triton.thaw()
        proxy.stop()


class _Load:
    """Two tritonclient clients in a closed loop on ``x`` against ``proxy``, recording
    (start, duration, status) of every call."""

    def __init__(self, proxy: ServerThread, x: np.ndarray) -> None:
        self.results: list[tuple[float, float, str]] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._loop, args=(proxy, x)) for _ in range(2)]
        for t in self._threads:
            t.start()

    def _loop(self, proxy: ServerThread, x: np.ndarray) -> None:
        c = tc.InferenceServerClient(proxy.target)
        while not self._stop.is_set():
            t0 = time.monotonic()
            try:
                _infer(c, x, timeout=20)
                status = "OK"
            except InferenceServerException as exc:
                status = str(exc.status())
            self.results.append((t0, time.monotonic() - t0, status))
            time.sleep(0.01)

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(60)

    def check(self, killed: float) -> list[str]:
        """Every call answered OK or UNAVAILABLE, none hung; those started 0.5-2 s after the
        kill got UNAVAILABLE; the first ones (before the kill) OK. The statuses."""
        statuses = [s for _, _, s in self.results]
        assert set(statuses) <= {"OK", "StatusCode.UNAVAILABLE"}, set(statuses)
        assert max(d for _, d, _ in self.results) < 5  # no call hung
        down = [s for t0, _, s in self.results if killed + 0.5 < t0 < killed + 2]
        assert down and set(down) == {"StatusCode.UNAVAILABLE"}
        assert all(s == "OK" for t0, _, s in self.results if t0 < killed - 0.2)
        return statuses


def _kill_under_load(up: Upstream, proxy: ServerThread, x: np.ndarray) -> tuple[_Load, float]:
    """Kill Triton while clients run: health NOT_SERVING within 5 s, not ready over gRPC and
    HTTP (still live), requests UNAVAILABLE naming the upstream. Returns the load (running)
    and the time of the kill."""
    load = _Load(proxy, x)
    try:
        time.sleep(1.0)
        killed = time.monotonic()
        up.triton.kill()
        assert _wait_health(proxy.port, NOT_SERVING, 5) < 5
        time.sleep(1.5)
        client = tc.InferenceServerClient(proxy.target)
        assert not client.is_server_ready() and client.is_server_live()
        http = th.InferenceServerClient(proxy.http_url)
        assert not http.is_server_ready() and http.is_server_live()
        err = _status(lambda: _infer(client, x))
        assert err.status() == "StatusCode.UNAVAILABLE"
        assert up.triton.target in err.message()
    except BaseException:
        load.stop()
        raise
    return load, killed


@pytest.mark.slow
def test_upstream_killed_mid_run_then_restarted(
    up: Upstream, request: pytest.FixtureRequest
) -> None:
    """Killed under load (as below), then Triton restarted on the same port: served again,
    same answers, by the same Guard process (the channel reconnects, the monitor verifies the
    model before it serves). About 50 s (Triton's restart): only with ``-m slow``."""
    if "slow" not in (request.config.getoption("markexpr") or ""):
        pytest.skip("restarts Triton (about 50 s): run with -m slow")
    proxy = _proxy(up, http_port=0)
    x = up.test_x[:8]
    try:
        before = _infer(tc.InferenceServerClient(proxy.target), x)
        load, killed = _kill_under_load(up, proxy, x)
        try:
            up.triton.start()  # same ports
            assert _wait_health(proxy.port, OK, 60) < 60
            time.sleep(0.5)
        finally:
            load.stop()
        statuses = load.check(killed)
        assert statuses[-1] == "OK"
        after = _infer(tc.InferenceServerClient(proxy.target), x)
        samples = scrape(proxy.metrics_port)
    finally:
        proxy.stop()
    np.testing.assert_array_equal(after["logits"], before["logits"])
    np.testing.assert_array_equal(after["flags"], before["flags"])
    # counted per batch: concurrent requests may share one
    errors = sample(samples, "guard_upstream_errors_total", code="UNAVAILABLE")
    assert 0 < errors <= statuses.count("StatusCode.UNAVAILABLE")


def test_upstream_killed_mid_run(up: Upstream) -> None:
    """The Triton process group is killed (SIGKILL) while two clients run: every call answers
    (UNAVAILABLE, no hang), health NOT_SERVING, the errors counted. Last in the module: it leaves
    the shared Triton dead (the slow test above also restarts it)."""
    proxy = _proxy(up, http_port=0)
    x = up.test_x[:8]
    try:
        load, killed = _kill_under_load(up, proxy, x)
        load.stop()
        statuses = load.check(killed)
        samples = scrape(proxy.metrics_port)
    finally:
        proxy.stop()
    unavailable = statuses.count("StatusCode.UNAVAILABLE")
    assert unavailable >= 2
    # counted per batch: concurrent requests may share one
    assert 0 < sample(samples, "guard_upstream_errors_total", code="UNAVAILABLE") <= unavailable
    assert sample(samples, "guard_requests_total", rpc="ModelInfer", outcome="unavailable") > 0
