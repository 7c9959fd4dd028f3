"""Fixtures of the deploy tests: the built-in model's guard, fitted on 2,000 Fashion-MNIST training
images (about 20 s instead of the default artifact's 2 minutes), saved readable by any user (the
container runs as uid 10001)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from guard import Guard
from guard.artifact import save_artifact
from guard.datasets import (
    DEFAULT_FASHION_MNIST_ROOT,
    FASHION_MNIST_CLASSES,
    as_model_input,
    load_fashion_mnist,
)
from guard.defaults import DEFAULT_MODEL
from guard.model import OnnxClassifier
from tests.tools import require_path

MODEL_NAME = "fmnist_small"


def make_readable(path: Path) -> None:
    """``chmod -R a+rX``: ``save_artifact`` creates the directory 0700 (``mkdtemp``)."""
    for p in [path, *path.rglob("*")]:
        p.chmod(p.stat().st_mode | 0o444 | (0o111 if p.is_dir() else 0))


@pytest.fixture(scope="session")
def small_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The built-in model's guard on 2,000 training images (200 of them calibrate)."""
    require_path(
        DEFAULT_FASHION_MNIST_ROOT / "train-images-idx3-ubyte.gz",
        "apt-get install dataset-fashion-mnist, or `make apt`",
    )
    x, y = load_fashion_mnist("train")
    guard = Guard(calib_fraction=0.1, progress=False).fit(
        OnnxClassifier(DEFAULT_MODEL),
        as_model_input(x[:2000]),
        y[:2000],
        class_names=list(FASHION_MNIST_CLASSES),
    )
    base = tmp_path_factory.mktemp("deploy")
    os.chmod(base, 0o755)
    path = save_artifact(guard, base / MODEL_NAME)
    make_readable(path)
    return path
