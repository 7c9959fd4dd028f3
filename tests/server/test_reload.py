"""Hot reload without dropping a request: the data plane's swap under load, SIGHUP and ``--watch``
in a real ``python -m server``, and the model repository RPCs through tritonclient (gRPC, HTTP).

Artifacts A and B are two guards of different models (different weights, so their logits
differ); C is A with one byte of a data file changed (the digest refuses it).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from guard import Guard, OnnxClassifier, load_artifact, save_artifact
from server.dataplane.batcher import Batcher
from server.dataplane.pipeline import BatchResult, BatchRun
from server.errors import LoadRefused
from server.grpc.gen.inference import grpc_service_pb2 as pb
from server.grpc.gen.inference import grpc_service_pb2_grpc as pb_grpc
from server.settings import Settings
from tests.guard import onnx_builders as ob

from .helpers import INPUT_NAME, MODEL, ServerThread, images, sample, scrape
from .test_shutdown import ServerProcess

OUTPUTS = ("logits", "hull_distance", "prediction")


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("reload")
    a = Guard(hull_k=16).fit(OnnxClassifier(ob.gemm_transb1(seed=0).data), images(1200, seed=0))
    b = Guard(hull_k=16).fit(OnnxClassifier(ob.gemm_transb1(seed=1).data), images(1200, seed=1))
    paths = {"A": save_artifact(a, root / "A"), "B": save_artifact(b, root / "B")}
    corrupt = Path(shutil.copytree(paths["A"], root / "C"))
    victim = next(p for p in sorted(corrupt.iterdir()) if p.suffix == ".npy")
    data = bytearray(victim.read_bytes())
    data[-1] ^= 0xFF
    victim.write_bytes(bytes(data))
    paths["C"] = corrupt
    return paths


def _stamped(version: int):
    """A run function whose every logit is ``version``."""

    def run(x: np.ndarray) -> BatchRun:
        time.sleep(0.002)
        logits = np.full((len(x), 2), float(version), np.float32)
        return BatchRun(BatchResult(logits, np.zeros(len(x), np.int64), None, None, version))

    return run


def test_swap_never_splits_a_request_across_models() -> None:
    """Requests of 5 images in batches of 2 (3 chunks each) while the run function is swapped
    20 times: every request's images all come from one function, the one its version names."""

    async def go() -> list[BatchResult]:
        b = Batcher(_stamped(0), max_batch_size=2, max_delay_s=0.001, max_queue=100)
        b.start()
        x = np.zeros((5, 1), np.float32)
        tasks = [asyncio.ensure_future(b.submit(x)) for _ in range(40)]
        for v in range(1, 21):
            await asyncio.sleep(0.003)
            await b.swap(_stamped(v))
        out = list(await asyncio.gather(*tasks))
        out.append(await b.submit(x))
        await b.close()
        return out

    results = asyncio.run(go())
    for r in results:
        assert np.all(r.logits == r.version), r.logits.ravel()
    assert results[-1].version == 20
    assert len({r.version for r in results}) > 3


def _expected(path: Path, x: np.ndarray) -> dict[str, np.ndarray]:
    s = load_artifact(path).score(x)
    return {"logits": s.logits, "hull_distance": s.hull_upper, "prediction": s.pred}


def _matches(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> bool:
    return bool(
        np.array_equal(got["prediction"], want["prediction"])
        and np.allclose(got["logits"], want["logits"], rtol=1e-4, atol=1e-5)
        and np.allclose(got["hull_distance"], want["hull_distance"], rtol=1e-3, atol=1e-5)
    )


def _server(artifact: Path, **settings: object) -> ServerThread:
    s = Settings(
        artifact=str(artifact), model_name=MODEL, port=0, http_port=0, metrics_port=0, **settings
    )
    return ServerThread(None, s)  # type: ignore[arg-type]  # None: load settings.artifact


def _infer_grpc(client: grpcclient.InferenceServerClient, x: np.ndarray) -> tuple[str, dict]:
    inp = grpcclient.InferInput(INPUT_NAME, list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    outs = [grpcclient.InferRequestedOutput(n) for n in OUTPUTS]
    r = client.infer(MODEL, [inp], outputs=outs, client_timeout=30)
    return r.get_response().model_version, {n: r.as_numpy(n) for n in OUTPUTS}


def _infer_http(client: httpclient.InferenceServerClient, x: np.ndarray) -> tuple[str, dict]:
    inp = httpclient.InferInput(INPUT_NAME, list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=True)
    outs = [httpclient.InferRequestedOutput(n, binary_data=True) for n in OUTPUTS]
    r = client.infer(MODEL, [inp], outputs=outs, timeout=30)
    return str(r.get_response()["model_version"]), {n: r.as_numpy(n) for n in OUTPUTS}


def test_reloads_under_load_drop_nothing(artifacts: dict[str, Path]) -> None:
    """6 clients (4 gRPC, 2 HTTP) in closed loop during 24 reloads alternating B and A and 4
    corrupt ones: no request fails, each answer is exactly one artifact's, the one its version
    names."""
    st = _server(artifacts["A"], max_queue_size=1024)
    xs = [images(3, seed=100 + i) for i in range(6)]
    want = {k: [_expected(artifacts[k], x) for x in xs] for k in ("A", "B")}
    for x_a, x_b in zip(want["A"], want["B"]):  # the two artifacts are told apart
        assert not _matches(x_a, x_b)
    answers: list[tuple[int, str, dict]] = []
    failures: list[str] = []
    stop = threading.Event()

    def client(i: int) -> None:
        if i < 4:
            c: object = grpcclient.InferenceServerClient(st.target)
            call = _infer_grpc
        else:
            c = httpclient.InferenceServerClient(st.http_url, concurrency=1)
            call = _infer_http  # type: ignore[assignment]
        while not stop.is_set():
            try:
                version, got = call(c, xs[i])  # type: ignore[arg-type]
                answers.append((i, version, got))
            except Exception as exc:  # noqa: BLE001 - every failure is counted
                failures.append(f"client {i}: {exc}")

    threads = [threading.Thread(target=client, args=(i,)) for i in range(6)]
    served = {"1": "A"}
    refused = 0
    try:
        for t in threads:
            t.start()
        time.sleep(0.3)
        plan = ["B", "A"] * 12
        for k in (5, 11, 17, 23):
            plan.insert(k, "C")
        for name in plan:
            if name == "C":
                with pytest.raises(LoadRefused, match="refused"):
                    st.call(st.srv.dataplane.load(MODEL, str(artifacts["C"])))
                refused += 1
            else:
                v = st.call(st.srv.dataplane.load(MODEL, str(artifacts[name])))
                served[str(v)] = name
            time.sleep(0.05)
        time.sleep(0.3)
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    try:
        n_reloads = len(served) - 1
        print(
            f"\nreloads: {n_reloads} ok + {refused} refused; requests: {len(answers)} answered, "
            f"{len(failures)} failed; versions seen: {len({a[1] for a in answers})}"
        )
        assert not failures, failures[:5]
        assert n_reloads == 24 and refused == 4
        assert len(answers) > 100
        for i, version, got in answers:
            assert version in served, version
            name = served[version]
            other = "B" if name == "A" else "A"
            assert _matches(got, want[name][i]), (i, version, name)
            assert not _matches(got, want[other][i]), (i, version)
        assert len({a[1] for a in answers}) >= 10  # answered across many versions
        m = scrape(st.metrics_port)
        assert sample(m, "guard_reloads_total", outcome="ok") == 24
        assert sample(m, "guard_reloads_total", outcome="refused") == 4
        assert st.srv.dataplane.model.metadata().versions == ("25",)
    finally:
        st.stop()


def test_repository_rpcs_through_tritonclient(artifacts: dict[str, Path]) -> None:
    st = _server(artifacts["A"])
    x = images(2, seed=7)
    try:
        g = grpcclient.InferenceServerClient(st.target)
        h = httpclient.InferenceServerClient(st.http_url)
        index = g.get_model_repository_index(as_json=True)["models"]
        assert index == [{"name": MODEL, "version": "1", "state": "READY"}]
        assert h.get_model_repository_index() == [
            {"name": MODEL, "version": "1", "state": "READY", "reason": ""}
        ]

        # unload: not ready, NOT_FOUND, listed UNAVAILABLE, until loaded again
        g.unload_model(MODEL)
        assert not g.is_model_ready(MODEL) and not h.is_model_ready(MODEL)
        with pytest.raises(InferenceServerException, match="unloaded") as e:
            _infer_grpc(g, x)
        assert e.value.status() == "StatusCode.NOT_FOUND"
        with pytest.raises(InferenceServerException, match="unloaded") as e:
            _infer_http(h, x)
        assert e.value.status() == "404"
        assert h.get_model_repository_index()[0]["state"] == "UNAVAILABLE"
        assert g.get_model_repository_index(as_json=True)["models"][0]["reason"] == "unloaded"
        h.load_model(MODEL)  # the configured artifact again
        assert g.is_model_ready(MODEL, "2")
        version, got = _infer_grpc(g, x)
        assert version == "2" and _matches(got, _expected(artifacts["A"], x))

        # another artifact through the "artifact" parameter: gRPC, then HTTP
        with grpc.insecure_channel(st.target) as ch:
            stub = pb_grpc.GRPCInferenceServiceStub(ch)
            req = pb.RepositoryModelLoadRequest(model_name=MODEL)
            req.parameters["artifact"].string_param = str(artifacts["B"])
            stub.RepositoryModelLoad(req, timeout=30)
        version, got = _infer_http(h, x)
        assert version == "3" and _matches(got, _expected(artifacts["B"], x))
        body = json.dumps({"parameters": {"artifact": str(artifacts["A"])}}).encode()
        url = f"http://{st.http_url}/v2/repository/models/{MODEL}/load"
        with urllib.request.urlopen(urllib.request.Request(url, body), timeout=30) as r:
            assert r.status == 200
        assert g.get_model_metadata(MODEL, as_json=True)["versions"] == ["4"]

        # refused: corrupt artifact (FAILED_PRECONDITION / 400), unknown model; A keeps serving
        with pytest.raises(InferenceServerException, match="refused") as e:
            with grpc.insecure_channel(st.target) as ch:
                req = pb.RepositoryModelLoadRequest(model_name=MODEL)
                req.parameters["artifact"].string_param = str(artifacts["C"])
                try:
                    pb_grpc.GRPCInferenceServiceStub(ch).RepositoryModelLoad(req, timeout=30)
                except grpc.RpcError as err:
                    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
                    raise InferenceServerException(err.details()) from None
        body = json.dumps({"parameters": {"artifact": str(artifacts["C"])}}).encode()
        with pytest.raises(urllib.error.HTTPError) as he:
            urllib.request.urlopen(urllib.request.Request(url, body), timeout=30)
        assert he.value.code == 400 and "refused" in json.loads(he.value.read())["error"]
        with pytest.raises(InferenceServerException) as e:
            g.load_model("other")
        assert e.value.status() == "StatusCode.NOT_FOUND"
        version, got = _infer_grpc(g, x)
        assert version == "4" and _matches(got, _expected(artifacts["A"], x))
        m = scrape(st.metrics_port)
        assert sample(m, "guard_reloads_total", outcome="refused") == 2
    finally:
        st.stop()


def _version(port: int) -> str:
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{port}")
    return str(client.get_model_metadata(MODEL, as_json=True)["versions"][0])


def _wait_version(port: int, version: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while _version(port) != version:
        assert time.monotonic() < deadline, f"version {version} not reached"
        time.sleep(0.1)


def test_sighup_and_watch_in_a_real_server(artifacts: dict[str, Path], tmp_path: Path) -> None:
    served = Path(shutil.copytree(artifacts["A"], tmp_path / MODEL))
    sp = ServerProcess(served, tmp_path / "stderr.log", "--metrics-port", "-1", "--watch")
    try:
        m = re.search(r"on 127\.0\.0\.1:(\d+) ", sp.wait_serving())
        assert m
        port = int(m.group(1))
        x = images(2, seed=5)
        assert _version(port) == "1"

        sp.proc.send_signal(signal.SIGHUP)  # same files: reloaded all the same
        _wait_version(port, "2")

        # replace the directory (as `guard fit --overwrite` or a deploy would): --watch sees it
        staged = shutil.copytree(artifacts["B"], tmp_path / "staged")
        os.rename(served, tmp_path / "old")
        os.rename(staged, served)
        _wait_version(port, "3")
        version, got = _infer_grpc(grpcclient.InferenceServerClient(f"127.0.0.1:{port}"), x)
        assert version == "3" and _matches(got, _expected(artifacts["B"], x))
        assert sp.proc.poll() is None
        log = sp.log.read_text()
        assert "SIGHUP: reloading" in log and "digest.json changed" in log, log
    finally:
        sp.kill()
