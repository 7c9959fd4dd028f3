"""The container image (``deploy/Containerfile``) built and run with podman on this machine.

Built from the working tree onto a Debian base made with debootstrap (``tests/deploy/podman.py``;
both cached in podman's store, rebuilt when their inputs change), then run as it would be in a
cluster: read-only root filesystem, its own unprivileged user, the artifact mounted read-only.
The unmodified ``tritonclient`` (gRPC and HTTP) gets the same answers as the guard scored in this
process; the image's HEALTHCHECK reports healthy; SIGTERM (what ``podman stop`` and Kubernetes
send) during a request lets it finish and the container exits 0. A second image made FROM it
with the artifact baked in serves the same way.

Slow: the first build takes about 10 minutes (the base about 4, the image about 7 on this 2-core
machine) and a rebuild after a source edit about 2. It runs with ``-m slow``, which ``make test``
runs (its second pytest call).
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from guard.artifact import load_artifact

from .conftest import MODEL_NAME
from .helpers import fmnist_test_images, free_port, wait_for
from .podman import IMAGE, Podman

pytestmark = pytest.mark.slow

UID = "10001"
GRACE_S = 10


@pytest.fixture(scope="module")
def podman(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Podman:
    if "slow" not in (request.config.getoption("markexpr") or ""):
        pytest.skip("builds a container image (minutes): run with -m slow (make test does)")
    return Podman(tmp_path_factory.mktemp("podman"))


@pytest.fixture(scope="module")
def image(podman: Podman, tmp_path_factory: pytest.TempPathFactory) -> str:
    log = tmp_path_factory.mktemp("build") / "build.log"
    image_id, seconds = podman.ensure_image(log)
    size = podman("image", "inspect", "--format", "{{.Size}}", IMAGE).stdout.strip()
    print(
        f"\nimage {IMAGE} {image_id[:12]}: {int(size) / 1e6:.0f} MB, "
        + (f"built in {seconds:.0f} s" if seconds else "reused (inputs unchanged)")
    )
    return IMAGE


class Container:
    """A detached container on the host network, its ports on the loopback; removed at the end."""

    def __init__(self, podman: Podman, image: str, *args: str, env: dict[str, str]) -> None:
        self.podman = podman
        self.name = f"guard-test-{threading.get_ident()}-{time.monotonic_ns()}"
        self.grpc_port, self.http_port, self.metrics_port = free_port(), free_port(), free_port()
        env = {
            "GUARD_HOST": "127.0.0.1",
            "GUARD_PORT": str(self.grpc_port),
            "GUARD_HTTP_PORT": str(self.http_port),
            "GUARD_METRICS_PORT": str(self.metrics_port),
            "GUARD_MODEL_NAME": MODEL_NAME,
            **env,
        }
        env_args = [a for k, v in env.items() for a in ("--env", f"{k}={v}")]
        podman(
            "run",
            "--detach",
            "--name",
            self.name,
            "--network=host",
            "--read-only",  # the root filesystem; /tmp is a tmpfs
            *env_args,
            *args,
            image,
        )

    def logs(self) -> str:
        proc = self.podman("logs", self.name, check=False)
        return proc.stdout + proc.stderr

    def healthcheck(self) -> bool:
        """The image's HEALTHCHECK, run now (``podman healthcheck run``)."""
        return self.podman("healthcheck", "run", self.name, check=False).returncode == 0

    def wait_healthy(self, timeout: float = 180) -> None:
        def check() -> bool:
            state = self.inspect()["State"]
            if not state["Running"]:
                raise AssertionError(f"the container exited {state['ExitCode']}:\n{self.logs()}")
            return self.healthcheck()

        wait_for(f"{self.name} healthy", check, timeout=timeout, every=1.0)

    def inspect(self) -> dict:
        return json.loads(self.podman("inspect", self.name).stdout)[0]

    def exec(self, *args: str) -> tuple[int, str]:
        proc = self.podman("exec", self.name, *args, check=False)
        return proc.returncode, proc.stdout + proc.stderr

    def remove(self) -> None:
        self.podman.remove(self.name)


def infer(grpc_port: int, http_port: int, x: np.ndarray) -> tuple[dict, dict]:
    import tritonclient.grpc as tc
    import tritonclient.http as th

    names = ("prediction", "abstain", "hull_distance", "margin_min")
    g = tc.InferenceServerClient(f"127.0.0.1:{grpc_port}")
    h = th.InferenceServerClient(f"127.0.0.1:{http_port}")
    try:
        gi = tc.InferInput("input", list(x.shape), "FP32")
        gi.set_data_from_numpy(x)
        gr = g.infer(MODEL_NAME, [gi], outputs=[tc.InferRequestedOutput(n) for n in names])
        hi = th.InferInput("input", list(x.shape), "FP32")
        hi.set_data_from_numpy(x, binary_data=True)
        hr = h.infer(MODEL_NAME, [hi], outputs=[th.InferRequestedOutput(n) for n in names])
        return {n: gr.as_numpy(n) for n in names}, {n: hr.as_numpy(n) for n in names}
    finally:
        g.close()
        h.close()


def scrape_value(port: int, name: str) -> float:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    raise AssertionError(f"{name} not exported")


@pytest.fixture()
def mounted(podman: Podman, image: str, small_artifact: Path) -> Iterator[Container]:
    c = Container(podman, image, "--volume", f"{small_artifact}:/models/guard:ro", env={})
    try:
        yield c
    finally:
        c.remove()


def test_image_configuration(podman: Podman, image: str) -> None:
    config = json.loads(podman("image", "inspect", image).stdout)[0]["Config"]
    assert config["User"] == f"{UID}:{UID}"
    assert set(config["ExposedPorts"]) == {"8000/tcp", "8001/tcp", "8002/tcp"}
    assert config["Entrypoint"] == ["/opt/guard/bin/guard", "serve"]
    assert config["StopSignal"] == "SIGTERM"
    assert "GUARD_ARTIFACT=/models/guard" in config["Env"]
    health = json.loads(
        podman("image", "inspect", "--format", "{{json .HealthCheck}}", image).stdout
    )
    assert health["Test"] == ["CMD", "/opt/guard/bin/python", "/opt/guard/healthcheck.py"]
    # nothing the serving stack does not need: no compiler, no pip, no torch
    for absent in ("/usr/bin/g++", "/opt/guard/bin/pip"):
        rc = podman("run", "--rm", "--entrypoint", "test", image, "!", "-e", absent, check=False)
        assert rc.returncode == 0, f"{absent} is in the image"
    rc = podman(
        "run",
        "--rm",
        "--entrypoint",
        "/opt/guard/bin/python",
        image,
        "-c",
        "import importlib.util as u; assert u.find_spec('torch') is None",
        check=False,
    )
    assert rc.returncode == 0, rc.stdout + rc.stderr


def test_serves_a_mounted_artifact_read_only_as_non_root(
    mounted: Container, small_artifact: Path
) -> None:
    c = mounted
    c.wait_healthy()
    assert c.exec("id", "-u") == (0, UID + "\n")
    rc, out = c.exec("touch", "/opt/guard/x")
    assert rc != 0 and "Read-only file system" in out, out
    # the process is PID 1 (signals reach it directly)
    rc, out = c.exec("cat", "/proc/1/cmdline")
    assert out.replace("\0", " ").strip().endswith("guard serve"), out

    x = fmnist_test_images(16)
    got_grpc, got_http = infer(c.grpc_port, c.http_port, x)
    want = load_artifact(small_artifact).score(x)
    for got in (got_grpc, got_http):
        np.testing.assert_array_equal(got["prediction"], want.pred)
        # certified within the hull's relative gap (1e-3) on both sides
        np.testing.assert_allclose(got["hull_distance"], want.hull_upper, rtol=2e-3, atol=1e-5)
        np.testing.assert_allclose(got["margin_min"], want.d_min, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(got_grpc["abstain"], got_http["abstain"])
    assert scrape_value(c.metrics_port, "guard_images_total") == 32


def test_sigterm_lets_the_request_in_flight_finish_and_exits_0(
    podman: Podman, image: str, small_artifact: Path, tmp_path: Path
) -> None:
    """The artifact baked into an image FROM this one; SIGTERM while a request runs."""
    context = tmp_path / "baked"
    shutil.copytree(small_artifact, context / "artifact")
    (context / "Containerfile").write_text(f"FROM {image}\nCOPY artifact/ /models/guard/\n")
    baked = "localhost/guard:test-baked"
    podman(  # --format docker: an OCI image would drop the inherited HEALTHCHECK
        "build",
        "--format",
        "docker",
        "-t",
        baked,
        "-f",
        str(context / "Containerfile"),
        str(context),
        timeout=600,
    )
    c = Container(podman, baked, env={"GUARD_GRACE_S": str(GRACE_S)})
    try:
        c.wait_healthy()
        x = np.concatenate([fmnist_test_images(256)] * 2)  # 512 images: 8 batches of 64
        result: dict = {}

        def request() -> None:
            import tritonclient.grpc as tc

            client = tc.InferenceServerClient(f"127.0.0.1:{c.grpc_port}")
            try:
                inp = tc.InferInput("input", list(x.shape), "FP32")
                inp.set_data_from_numpy(x)
                result["answer"] = client.infer(MODEL_NAME, [inp]).as_numpy("prediction")
            except Exception as exc:  # noqa: BLE001 - reported by the test below
                result["error"] = exc
            finally:
                client.close()

        t = threading.Thread(target=request)
        t.start()
        wait_for(
            "a request in flight",
            lambda: scrape_value(c.metrics_port, "guard_in_flight_requests") >= 1,
            timeout=30,
            every=0.02,
        )
        podman("kill", "--signal", "TERM", c.name)
        exit_code = int(podman("wait", c.name, timeout=GRACE_S + 60).stdout.strip())
        t.join(timeout=60)
        logs = c.logs()
        assert exit_code == 0, logs
        # accepted before the signal: answered in full
        assert "error" not in result, result
        np.testing.assert_array_equal(result["answer"][:256], result["answer"][256:])
        assert len(result["answer"]) == len(x)
        assert "stopped" in logs, logs
    finally:
        c.remove()
        podman("rmi", baked, check=False)
