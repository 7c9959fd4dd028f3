"""Tests of guard.datasets and of the committed default ONNX model."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from guard.datasets import (
    DEFAULT_FASHION_MNIST_ROOT,
    FASHION_MNIST_CLASSES,
    as_model_input,
    load_digits_28,
    load_fashion_mnist,
)
from guard.errors import DataError, InputError

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_ONNX = REPO_ROOT / "guard" / "assets" / "fmnist_resnet.onnx"

needs_fmnist = pytest.mark.skipif(
    not (DEFAULT_FASHION_MNIST_ROOT / "t10k-images-idx3-ubyte.gz").is_file(),
    reason="Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)",
)


@needs_fmnist
@pytest.mark.parametrize(("split", "n"), [("train", 60_000), ("test", 10_000)])
def test_load_fashion_mnist_shapes(split: str, n: int) -> None:
    images, labels = load_fashion_mnist(split)
    assert images.shape == (n, 28, 28)
    assert images.dtype == np.uint8
    assert labels.shape == (n,)
    assert labels.dtype == np.int64
    assert labels.min() == 0 and labels.max() == 9
    assert np.all(np.bincount(labels, minlength=10) == n // 10)
    assert images.max() == 255


def test_classes() -> None:
    assert len(FASHION_MNIST_CLASSES) == 10
    assert FASHION_MNIST_CLASSES[0] == "T-shirt/top"
    assert FASHION_MNIST_CLASSES[9] == "Ankle boot"


def test_missing_root_raises_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
        load_fashion_mnist("test", root=tmp_path / "nowhere")


def test_bad_magic_raises_data_error(tmp_path: Path) -> None:
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        with gzip.open(tmp_path / name, "wb") as fh:
            fh.write(b"\x00\x00\x08\x99" + b"\x00" * 12)
    with pytest.raises(DataError, match="magic"):
        load_fashion_mnist("test", root=tmp_path)


def test_invalid_split_raises_input_error() -> None:
    with pytest.raises(InputError):
        load_fashion_mnist("validation")


def test_as_model_input() -> None:
    images = np.array([[[0, 255], [51, 102]]], dtype=np.uint8)
    x = as_model_input(images)
    assert x.shape == (1, 1, 2, 2)
    assert x.dtype == np.float32
    np.testing.assert_allclose(x[0, 0], [[0.0, 1.0], [0.2, 0.4]], rtol=1e-6)
    with pytest.raises(InputError):
        as_model_input(images.astype(np.float32))


def test_load_digits_28() -> None:
    pytest.importorskip("sklearn")
    images, labels = load_digits_28()
    assert images.shape == (1797, 28, 28)
    assert images.dtype == np.uint8
    assert labels.shape == (1797,)
    assert labels.dtype == np.int64
    assert set(np.unique(labels)) == set(range(10))
    assert images.max() > 200  # rescaled from 0..16 to 0..255
    assert images[:, 0, :].mean() < images[:, 14, :].mean()  # ink is mostly in the middle


@needs_fmnist
def test_default_onnx_model_accuracy() -> None:
    ort = pytest.importorskip("onnxruntime")
    assert DEFAULT_ONNX.is_file(), f"{DEFAULT_ONNX} missing; run scripts/train_default_model.py"
    assert DEFAULT_ONNX.stat().st_size < 2 * 1024 * 1024
    images, labels = load_fashion_mnist("test")
    x, y = as_model_input(images[:2000]), labels[:2000]
    sess = ort.InferenceSession(str(DEFAULT_ONNX), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["input"]
    assert [o.name for o in sess.get_outputs()] == ["logits"]
    (logits,) = sess.run(["logits"], {"input": x})
    assert logits.shape == (2000, 10)
    accuracy = float((logits.argmax(1) == y).mean())
    assert accuracy >= 0.92, accuracy
