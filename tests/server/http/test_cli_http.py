"""``guard serve`` as a process: ``--http-port 0`` announces the bound HTTP port, serves the
REST API beside gRPC, and ``--log-format json`` writes every log line (the access log's
included) as one JSON object."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from guard import save_artifact

from ..helpers import images
from .rest import infer, json_request

ROOT = Path(__file__).resolve().parents[3]


def test_serve_http_with_json_logs(guard, tmp_path):
    artifact = save_artifact(guard, tmp_path / "tiny")
    env = {k: v for k, v in os.environ.items() if not k.startswith("GUARD_")}
    env["PYTHONUNBUFFERED"] = "1"
    err = tmp_path / "stderr.log"
    with open(err, "w") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "server", "--artifact", str(artifact), "--host", "127.0.0.1"]
            + ["--port", "0", "--http-port", "0", "--metrics-port", "-1", "--log-format", "json"],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env=env,
        )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        m = re.search(r"HTTP/REST \(Open Inference Protocol v2\) on 127\.0\.0\.1:(\d+)", line)
        assert m, line + err.read_text()
        reply = infer(int(m.group(1)), json_request(images(2, seed=99), ["prediction"]))
        assert reply.status == 200, reply.body
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    lines = err.read_text().splitlines()
    docs = [json.loads(x) for x in lines if x.startswith("{")]  # (native libraries' own lines)
    assert docs and all(x.startswith("{") for x in lines if "server." in x), lines
    access = [d for d in docs if d["logger"] == "server.access"]
    assert [(d["transport"], d["rpc"], d["images"], d["http_status"]) for d in access] == [
        ("http", "ModelInfer", 2, 200)
    ]
    assert any("HTTP listening" in d.get("message", "") for d in docs)
