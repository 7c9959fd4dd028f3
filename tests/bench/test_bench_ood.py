"""Smoke test of bench/ood.py (the default abstention score's cost): it runs on a small
artifact and writes its rows. No timing is asserted."""

from __future__ import annotations

import json
from pathlib import Path

from guard import Guard, OnnxClassifier
from guard.artifact import save_artifact
from guard.datasets import (
    DEFAULT_FASHION_MNIST_ROOT,
    FASHION_MNIST_CLASSES,
    as_model_input,
    load_fashion_mnist,
)
from guard.defaults import DEFAULT_MODEL
from tests.tools import missing


def test_bench_ood_runs_and_writes_rows(tmp_path: Path) -> None:
    if not (DEFAULT_FASHION_MNIST_ROOT / "train-images-idx3-ubyte.gz").is_file():
        missing("Fashion-MNIST", "make apt installs dataset-fashion-mnist")
    from bench import ood

    x, y = load_fashion_mnist("train")
    guard = Guard(
        calib_fraction=0.2
    ).fit(  # 120 calibration images: the score's minimum
        OnnxClassifier(DEFAULT_MODEL),
        as_model_input(x[:600]),
        y[:600],
        class_names=list(FASHION_MNIST_CLASSES),
    )
    art = save_artifact(guard, tmp_path / "tiny")
    assert ood.main(["--quick", "--artifact", str(art), "--out-dir", str(tmp_path)]) == 0
    doc = json.loads((tmp_path / "ood.json").read_text())
    whats = [r["what"] for r in doc["rows"]]
    assert "Guard.score_features (everything)" in whats and "peer knn" in whats
    for r in doc["rows"]:
        assert r["ms per image"]["median"] > 0
    assert doc["config"]["default components"] == list(guard.ood_.names)
    assert (tmp_path / "ood.md").read_text().startswith("#")
