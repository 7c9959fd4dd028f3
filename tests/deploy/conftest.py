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
    # written readable (0o777 less the umask): the image's uid 10001 reads it as it is
    assert all(p.stat().st_mode & 0o444 == 0o444 for p in [path, *path.iterdir()])
    return path
