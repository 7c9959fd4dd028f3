"""The shared MNIST / notMNIST loaders: where the folder is found, what they return, the split."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from guard import datasets
from guard.errors import DataError, InputError
from tests.tools import missing


def _shared() -> Path:
    try:
        return datasets.shared_datasets_dir()
    except DataError as exc:
        missing("the shared data sets", str(exc))
        raise AssertionError("unreachable") from None


@pytest.mark.parametrize("load", [datasets.load_mnist, datasets.load_notmnist])
def test_shared_sets_shapes_and_labels(load) -> None:
    _shared()
    x, y = load()
    assert x.shape == (10_000, 28, 28) and x.dtype == np.uint8
    assert y.shape == (10_000,) and y.dtype == np.int64
    assert set(np.unique(y)) == set(range(10))
    assert x.max() == 255 and x.min() == 0


def test_env_var_wins_and_bad_files_are_named(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv(datasets.SHARED_DATASETS_ENV, str(tmp_path))
    assert datasets.shared_datasets_dir() == tmp_path
    with pytest.raises(DataError, match="MNIST file .*mnist-t10k-images-idx3-ubyte.gz is missing"):
        datasets.load_mnist()
    # a file with the wrong magic number
    with gzip.open(tmp_path / "notmnist-t10k-images-idx3-ubyte.gz", "wb") as fh:
        fh.write(np.array([2049, 1, 28, 28], dtype=">u4").tobytes() + bytes(784))
    with pytest.raises(DataError, match="notMNIST file .* magic number 2049, expected 2051"):
        datasets.load_notmnist()
    monkeypatch.setenv(datasets.SHARED_DATASETS_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(DataError, match="is not a directory"):
        datasets.shared_datasets_dir()


def test_default_locations(monkeypatch) -> None:
    monkeypatch.delenv(datasets.SHARED_DATASETS_ENV, raising=False)
    root = Path(datasets.__file__).resolve().parents[1]
    for candidate in (root.parent / "shared" / "datasets", Path("/work/shared/datasets")):
        if candidate.is_dir():
            assert datasets.shared_datasets_dir() == candidate
            return
    with pytest.raises(DataError, match="looked in"):
        datasets.shared_datasets_dir()


def test_split_8k_is_a_seeded_partition() -> None:
    tr, te = datasets.split_8k()
    assert len(tr) == 8000 and len(te) == 2000
    assert np.array_equal(np.sort(np.concatenate([tr, te])), np.arange(10_000))
    assert np.all(np.diff(tr) > 0) and np.all(np.diff(te) > 0)
    tr2, _ = datasets.split_8k()
    assert np.array_equal(tr, tr2)
    assert not np.array_equal(tr, datasets.split_8k(seed=1)[0])
    with pytest.raises(InputError):
        datasets.split_8k(100, 100)
