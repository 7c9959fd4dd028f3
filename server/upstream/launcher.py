"""Start and stop a real Triton Inference Server for ``guard demo --upstream``, the benchmark and
the tests: ``pytriton_host.py`` (PyTriton's ``tritonserver``, onnxruntime inside a ``@batch``
callable) run by the Triton env's interpreter, in a process group of its own, on given ports.

The Triton env (``.venv-triton``) is built by ``make triton`` from Debian's ``/usr/bin/python3``
(its Python backend's stub links the system libpython); ``$GUARD_TRITON_PYTHON`` names another
interpreter. Nothing here imports PyTriton.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

from guard.errors import GuardError

#: The repository root (an editable install: where ``make triton`` builds the env).
ROOT = Path(__file__).resolve().parents[2]
HOST_SCRIPT = Path(__file__).resolve().parent / "pytriton_host.py"
TRITON_PYTHON_ENV = "GUARD_TRITON_PYTHON"
#: Start-up takes ~10-20 s on a 2-core machine; allow for a loaded one.
START_TIMEOUT_S = 180.0


class TritonUnavailable(GuardError):
    """The Triton env is missing, or Triton did not start."""


def triton_python() -> Path:
    """The Triton env's interpreter: ``$GUARD_TRITON_PYTHON``, else ``ROOT/.venv-triton``."""
    env = os.environ.get(TRITON_PYTHON_ENV)
    return Path(env) if env else ROOT / ".venv-triton" / "bin" / "python"


def check_triton_env() -> Path:
    """The interpreter, or :class:`TritonUnavailable` saying how to build the env."""
    python = triton_python()
    complete = os.environ.get(TRITON_PYTHON_ENV) or (ROOT / ".venv-triton" / ".installed").is_file()
    if not python.is_file() or not complete:
        raise TritonUnavailable(
            f"the Triton env is missing ({python}): run `make triton` in {ROOT} (it builds "
            f".venv-triton with PyPI's nvidia-pytriton, a real Triton Inference Server, from "
            f"Debian's /usr/bin/python3), or set {TRITON_PYTHON_ENV}"
        )
    return python


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class TritonHost:
    """``tritonserver`` serving ``repo`` (every entry, or ``models``: ``NAME`` or ``NAME=ALT``,
    see ``pytriton_host.py``) on fixed free ports, so that a restart comes back on the same
    address. :meth:`kill` ends the whole process group (``tritonserver`` and the backend stubs
    included), as a crash would."""

    def __init__(
        self,
        repo: Path,
        models: list[str] | None = None,
        *,
        switch_file: Path | None = None,
        log: Path | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        self.python = check_triton_env()
        self.repo = repo
        self.models = models or []
        self.switch_file = switch_file
        self.host = host
        self.grpc_port, self.http_port, self.metrics_port = (free_port(host) for _ in range(3))
        self.log = log
        self.proc: subprocess.Popen[str] | None = None
        self._ready = threading.Event()
        self._deadline = 0.0

    @property
    def target(self) -> str:
        """``HOST:PORT`` of its gRPC endpoint."""
        return f"{self.host}:{self.grpc_port}"

    def start(self) -> TritonHost:
        """Launch and wait until every model is loaded."""
        return self.launch().wait()

    def launch(self) -> TritonHost:
        """Start the process (:meth:`wait` for it to serve); the caller may work meanwhile."""
        cmd = [str(self.python), str(HOST_SCRIPT), "--repo", str(self.repo), "--host", self.host]
        cmd += ["--grpc-port", str(self.grpc_port), "--http-port", str(self.http_port)]
        cmd += ["--metrics-port", str(self.metrics_port)]
        for m in self.models:
            cmd += ["--model", m]
        if self.switch_file is not None:
            cmd += ["--switch-file", str(self.switch_file)]
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        env.pop("PYTHONPATH", None)  # the Triton env must not see the project's packages
        with open(self.log or os.devnull, "a") as stderr:
            self.proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
                start_new_session=True,
                env=env,
            )
        self._ready = ready = threading.Event()
        proc = self.proc

        def read() -> None:  # READY once the models are loaded (the only line on stdout: see
            # pytriton_host.py; tritonserver's log goes to stderr, the log file)
            assert proc.stdout is not None
            for line in proc.stdout:
                if line.strip() == "READY":
                    ready.set()

        threading.Thread(target=read, daemon=True, name="triton-stdout").start()
        self._deadline = time.monotonic() + START_TIMEOUT_S
        return self

    def wait(self) -> TritonHost:
        """Until it serves; :class:`TritonUnavailable` (with the log's tail) if it exits or
        takes longer than :data:`START_TIMEOUT_S`."""
        proc = self.proc
        if proc is None:
            raise TritonUnavailable("Triton was not launched")
        while not self._ready.wait(0.2):
            if proc.poll() is not None or time.monotonic() > self._deadline:
                code = proc.poll()
                self.kill()
                tail = self.log.read_text()[-3000:] if self.log and self.log.exists() else ""
                what = f"exited with code {code}" if code is not None else "timed out"
                raise TritonUnavailable(f"Triton did not start ({what}): {tail}")
        return self

    def kill(self) -> None:
        """SIGKILL to the whole process group; returns once every process of it is gone (the
        ports are free again)."""
        if self.proc is None:
            return
        pgid = self.proc.pid
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(30)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # its children, reparented, may still be exiting
            try:
                os.killpg(pgid, signal.SIGKILL)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        self.proc = None

    def freeze(self) -> None:
        """SIGSTOP the group: a hung model server (connections open, no answers)."""
        if self.proc is not None:
            os.killpg(self.proc.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        if self.proc is not None:
            os.killpg(self.proc.pid, signal.SIGCONT)

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM (PyTriton stops its server), then SIGKILL for what is left."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout_s)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
        self.kill()
