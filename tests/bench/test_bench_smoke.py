"""Smoke tests of the benchmark scripts (``bench/``): they run and write their JSON and
Markdown results with the expected keys. No timing is asserted.

``bench/serve.py`` runs as the command it is (``python -m bench.serve``), with a time limit.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench import common
from guard import Guard, OnnxClassifier
from guard.artifact import save_artifact
from guard.datasets import (
    DEFAULT_FASHION_MNIST_ROOT,
    FASHION_MNIST_CLASSES,
    as_model_input,
    load_fashion_mnist,
)
from guard.defaults import DEFAULT_MODEL

REPO = Path(__file__).resolve().parents[2]

needs_data = pytest.mark.skipif(
    not DEFAULT_MODEL.is_file()
    or not (DEFAULT_FASHION_MNIST_ROOT / "train-images-idx3-ubyte.gz").is_file(),
    reason="needs the built-in model and Fashion-MNIST (dataset-fashion-mnist)",
)

STAT_KEYS = {"median", "min", "max", "n"}
MACHINE_KEYS = {"cpu_model", "cores", "python", "numpy", "onnxruntime", "faiss", "date", "command"}


@pytest.fixture(scope="module")
def tiny_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The built-in model's guard on 500 Fashion-MNIST training images, no calibration split."""
    x, y = load_fashion_mnist("train")
    guard = Guard(calib_fraction=0).fit(
        OnnxClassifier(DEFAULT_MODEL),
        as_model_input(x[:500]),
        y[:500],
        class_names=list(FASHION_MNIST_CLASSES),
    )
    return save_artifact(guard, tmp_path_factory.mktemp("bench") / "fmnist_tiny")


def _load(out: Path, name: str) -> tuple[dict, str]:
    jpath, mpath = out / f"{name}.json", out / f"{name}.md"
    assert jpath.is_file() and mpath.is_file(), sorted(p.name for p in out.iterdir())
    return json.loads(jpath.read_text()), mpath.read_text()


def _check_doc(doc: dict, name: str) -> None:
    assert doc["name"] == name
    assert MACHINE_KEYS <= set(doc["machine"])
    assert doc["command"] == doc["machine"]["command"]
    assert {"config", "summary", "rows", "sections", "notes"} <= set(doc)


# ---------------------------------------------------------------------------- bench.common
def test_timeit_and_stats() -> None:
    calls = []
    s = common.timeit(lambda: calls.append(time.perf_counter()), repeats=5, warmup=2)
    assert set(s) == STAT_KEYS and s["n"] == 5 and len(calls) == 7
    assert 0 <= s["min"] <= s["median"] <= s["max"]
    t = common.stats([3.0, 1.0, float("nan"), 2.0])
    assert t == {"median": 2.0, "min": 1.0, "max": 3.0, "n": 3}
    r = common.rate({"median": 0.5, "min": 0.25, "max": 1.0, "n": 3}, 10)
    assert r == {"median": 20.0, "min": 10.0, "max": 40.0, "n": 3}
    assert common.fmt_stat(t) == "2.00 [1.00, 3.00]"
    with pytest.raises(ValueError):
        common.timeit(lambda: None, repeats=0)


def test_write_results(tmp_path: Path) -> None:
    rows = [
        {"what": "a", "time_s": common.stats([1.0, 2.0, 3.0]), "count": 3},
        {"what": "b|c", "time_s": common.stats([0.5]), "extra": float("inf")},
    ]
    jpath, mpath = common.write_results(
        "demo",
        rows,
        tmp_path / "out",
        title="Demo",
        sections={"More": [{"x": 1}]},
        summary={"ratio": common.stats([0.5, 0.7])},
        notes=["a note"],
        config={"k": [1, 2]},
    )
    doc, md = _load(tmp_path / "out", "demo")
    assert (jpath, mpath) == (tmp_path / "out" / "demo.json", tmp_path / "out" / "demo.md")
    _check_doc(doc, "demo")
    assert doc["rows"][0]["time_s"] == {"median": 2.0, "min": 1.0, "max": 3.0, "n": 3}
    assert doc["rows"][1]["extra"] == "inf"  # JSON has no infinity
    assert doc["sections"]["More"] == [{"x": 1}]
    assert "| what | time_s | count | extra |" in md
    assert "2.00 [1.00, 3.00]" in md and "b\\|c" in md
    assert "## More" in md and "## Summary" in md and "a note" in md
    assert doc["machine"]["command"] in md


# ---------------------------------------------------------------------------- bench/memory.py
@needs_data
def test_memory_benchmark(tiny_artifact: Path, tmp_path: Path) -> None:
    from bench import memory

    assert (
        memory.main(
            [
                "--artifact",
                str(tiny_artifact),
                "--repeats",
                "1",
                "--out-dir",
                str(tmp_path),
                "--name",
                "mem",
            ]
        )
        == 0
    )
    doc, md = _load(tmp_path, "mem")
    _check_doc(doc, "mem")
    summary = doc["summary"]
    assert any(k.startswith("index memory") for k in summary)
    assert "target" in summary and ("MET" in summary["target"] or "MISSED" in summary["target"])
    assert "server RSS growth over its imports / raw" in summary
    comps = {r["component"]: r for r in doc["rows"]}
    assert "guard.hull_.index" in comps  # the FAISS index
    assert all(r["MB"] >= 0 for r in doc["rows"])
    steps = doc["sections"]["RSS of a fresh process loading the artifact"]
    assert len(steps) == 5 and set(steps[1]["rss_MB"]) == STAT_KEYS
    assert "Server process" in doc["sections"]
    assert "## Bytes held by each structure" in md


# ---------------------------------------------------------------------------- bench/geometry.py
@needs_data
def test_geometry_benchmark_smoke(tiny_artifact: Path, tmp_path: Path) -> None:
    """``bench/geometry.py --smoke``: every section runs (tiny sizes) and lands in the results."""
    out = tmp_path / "out"
    proc = subprocess.run(
        [
            sys.executable,
            "bench/geometry.py",
            "--smoke",
            "--artifact",
            str(tiny_artifact),
            "--out-dir",
            str(out),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc, md = _load(out, "geometry_smoke")
    s = doc["summary"]
    for key in (
        "geometry, batch 64 ms/image",
        "geometry / GEMM floor, batch 1",
        "hull 20,000 x 64 single-query p50 ms",
        "raw hull, batch 64: previous defaults / defaults",
        "spherical hull, batch 1: pool_size 2048 / defaults",
        "score_features wall, batch 16: n_jobs=1 / n_jobs=-1",
        "d_min 100 x 256 ms/sample",
    ):
        assert key in s, (key, sorted(s))
    for title in ("Hull settings", "Threads", "Exact d_min", "Certified hull, synthetic"):
        assert f"## {title}" in md
    assert doc["rows"] and all(r["max hull gap"] <= 1e-3 for r in doc["rows"])


@needs_data
def test_checkouts_benchmark_smoke(tiny_artifact: Path, tmp_path: Path) -> None:
    """``bench/checkouts.py``: one checkout against itself runs in alternating processes and
    reports a paired ratio per batch size; a directory without the package is refused."""
    out = tmp_path / "out"
    cmd = [sys.executable, "bench/checkouts.py", str(REPO), str(REPO), "--pairs", "2"]
    cmd += ["--images", "16", "--batches", "8", "--artifact", str(tiny_artifact)]
    proc = subprocess.run(
        cmd + ["--out-dir", str(out)], cwd=REPO, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc, _ = _load(out, "checkouts")
    assert set(doc["summary"]) == {
        "batch 8, as served: second / first (paired median)",
        "batch 8, all: second / first (paired median)",
    }
    assert all(v > 0 for v in doc["summary"].values())
    bad = subprocess.run(
        [sys.executable, "bench/checkouts.py", str(tmp_path), str(REPO), "--pairs", "1"]
        + ["--images", "16", "--batches", "8", "--artifact", str(tiny_artifact)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert bad.returncode != 0 and "failed" in bad.stderr


# ---------------------------------------------------------------------------- bench/serve.py
@needs_data
def test_serve_benchmark_quick(tiny_artifact: Path, tmp_path: Path) -> None:
    t0 = time.perf_counter()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.serve",
            "--quick",
            "--artifact",
            str(tiny_artifact),
            "--concurrency",
            "1,2",
            "--request-batch",
            "1,2",
            "--batching",
            "4x1",
            "--repeats",
            "1",
            "--min-warmup-s",
            "0.05",
            "--min-window-s",
            "0.1",
            "--min-requests",
            "2",
            "--n-images",
            "32",
            "--floor-batches",
            "1,4",
            "--floor-repeats",
            "1",
            "--out-dir",
            str(tmp_path),
            "--name",
            "srv",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "descriptor" not in proc.stderr.lower(), proc.stderr
    assert time.perf_counter() - t0 < 60
    assert "TARGET (>= 0.8 x guard-off throughput)" in proc.stdout
    doc, md = _load(tmp_path, "srv")
    _check_doc(doc, "srv")
    rows = doc["rows"]
    assert {(r["req_batch"], r["concurrency"], r["guard"]) for r in rows} == {
        (b, c, g) for b in (1, 2) for c in (1, 2) for g in ("on", "off")
    }
    for r in rows:
        assert r["setting"] == "4x1ms" and r["errors"] == 0 and r["requests"] >= 2
        for key in ("images_per_s", "p50_ms", "p99_ms"):
            assert set(r[key]) == STAT_KEYS and r[key]["median"] > 0
    ratios = doc["sections"]["Guard ON / guard OFF, paired per repeat"]
    assert len(ratios) == 4 and all(r["throughput_on_over_off"]["median"] > 0 for r in ratios)
    floor = doc["sections"]["Floor: in-process, no gRPC"]
    assert {(r["what"].split()[0], r["batch"]) for r in floor} == {
        ("onnxruntime", 1),
        ("onnxruntime", 4),
        ("guard", 1),
        ("guard", 4),
    }
    assert any(
        "target" in k and ("MET" in v or "MISSED" in v)
        for k, v in doc["summary"].items()
        if isinstance(v, str)
    )
    assert "## Guard ON / guard OFF, paired per repeat" in md
