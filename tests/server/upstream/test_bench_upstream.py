"""Smoke test of ``python -m bench.serve --upstream`` (Guard in front of a real Triton vs Triton
directly): it runs and writes its results with the expected keys. No timing is asserted. It
starts a Triton and two servers (about 40 s): only with ``-m slow``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from guard import Guard, OnnxClassifier
from guard.artifact import save_artifact
from guard.datasets import FASHION_MNIST_CLASSES, as_model_input, load_fashion_mnist
from guard.defaults import DEFAULT_MODEL

from .triton import ROOT, require_triton


@pytest.mark.slow
def test_serve_upstream_benchmark(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    if "slow" not in (request.config.getoption("markexpr") or ""):
        pytest.skip("starts a Triton and two servers (about 40 s): run with -m slow")
    require_triton()
    x, y = load_fashion_mnist("train")
    guard = Guard(calib_fraction=0).fit(
        OnnxClassifier(DEFAULT_MODEL),
        as_model_input(x[:500]),
        y[:500],
        class_names=list(FASHION_MNIST_CLASSES),
    )
    artifact = save_artifact(guard, tmp_path / "tiny")
    args = ["--upstream", "--quick", "--artifact", str(artifact), "--repeats", "1"]
    args += ["--request-batch", "1,2", "--min-warmup-s", "0.05", "--min-window-s", "0.1"]
    args += ["--min-requests", "3", "--n-images", "16", "--out-dir", str(tmp_path)]
    proc = subprocess.run(
        [sys.executable, "-m", "bench.serve", *args, "--name", "up"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = json.loads((tmp_path / "up.json").read_text())
    assert (tmp_path / "up.md").is_file()
    rows = doc["rows"]
    assert {(r["req_batch"], r["concurrency"]) for r in rows} == {(1, 1), (2, 1)}
    for r in rows:
        assert r["errors"] == 0 and r["setting"] == "64x0ms"
        for key in ("p50_direct_ms", "p50_off_ms", "p50_on_ms", "geometry_ms_per_batch"):
            assert r[key]["median"] > 0
    assert any("forwarding" in str(v) for v in doc["summary"].values())
