"""Loaders for the built-in data sets; nothing is ever downloaded.

* Fashion-MNIST comes from Debian's ``dataset-fashion-mnist`` package, which installs the four
  gzipped IDX files under ``/usr/share/datasets/fashion-mnist``. They are parsed with numpy.
* The 8x8 handwritten digits bundled with scikit-learn (``sklearn.datasets.load_digits``) are
  rescaled to 0..255 and resized to 28x28, so they can serve as an out-of-distribution set for
  a Fashion-MNIST model.
* MNIST's and notMNIST's 10,000-image test files (IDX, same layout) come from the project's shared
  data folder (:func:`shared_datasets_dir`: ``$GUARD_SHARED_DATASETS``, else ``../shared/datasets``
  next to the repository, else ``/work/shared/datasets``); :func:`load_mnist`,
  :func:`load_notmnist`. :func:`split_8k` is the seeded 8,000 / 2,000 split of such a set that the
  MNIST and notMNIST models of the OOD suite were trained / are tested on.

Images are returned as ``uint8`` arrays of shape ``[N, 28, 28]``; :func:`as_model_input` turns
them into the ``float32 [N, 1, 28, 28]`` tensors in ``[0, 1]`` that the default model expects.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

from guard.errors import DataError, InputError

__all__ = [
    "DEFAULT_FASHION_MNIST_ROOT",
    "FASHION_MNIST_CLASSES",
    "NOTMNIST_CLASSES",
    "SHARED_DATASETS_ENV",
    "as_model_input",
    "load_digits_28",
    "load_fashion_mnist",
    "load_mnist",
    "load_notmnist",
    "shared_datasets_dir",
    "split_8k",
]

DEFAULT_FASHION_MNIST_ROOT = Path("/usr/share/datasets/fashion-mnist")

FASHION_MNIST_CLASSES: tuple[str, ...] = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

_SPLIT_PREFIX = {"train": "train", "test": "t10k"}
_IMAGES_MAGIC = 2051  # 0x00000803: unsigned byte, 3 dimensions
_LABELS_MAGIC = 2049  # 0x00000801: unsigned byte, 1 dimension
_INSTALL_HINT = "install it with `apt-get install dataset-fashion-mnist`"


def _read_idx(
    path: Path,
    magic: int,
    ndim: int,
    what: str = "Fashion-MNIST",
    hint: str = _INSTALL_HINT,
) -> np.ndarray:
    """Parse one gzipped IDX file of unsigned bytes into an array of shape given by its header."""
    try:
        with gzip.open(path, "rb") as fh:
            data = fh.read()
    except FileNotFoundError:
        raise DataError(f"{what} file {path} is missing; {hint}") from None
    except (OSError, EOFError) as err:
        raise DataError(f"{what} file {path} is unreadable ({err}); {hint}") from None
    header_len = 4 * (1 + ndim)
    if len(data) < header_len:
        raise DataError(f"{what} file {path} is truncated (no IDX header)")
    header = np.frombuffer(data, dtype=">u4", count=1 + ndim)
    if int(header[0]) != magic:
        raise DataError(
            f"{what} file {path} has IDX magic number {int(header[0])}, expected {magic}"
        )
    shape = tuple(int(d) for d in header[1:])
    expected = int(np.prod(shape))
    body = np.frombuffer(data, dtype=np.uint8, offset=header_len)
    if body.size != expected:
        raise DataError(
            f"{what} file {path} holds {body.size} bytes of data, header says {expected}"
        )
    return body.reshape(shape)


def load_fashion_mnist(
    split: str = "train", root: str | Path = DEFAULT_FASHION_MNIST_ROOT
) -> tuple[np.ndarray, np.ndarray]:
    """Load one split of Fashion-MNIST from the local Debian package.

    Args:
        split: ``"train"`` (60,000 images) or ``"test"`` (10,000 images).
        root: folder holding ``{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz``.

    Returns:
        ``(images, labels)``: images ``uint8 [N, 28, 28]`` (0 = background), labels
        ``int64 [N]`` in ``0..9``, indexing :data:`FASHION_MNIST_CLASSES`.

    Raises:
        InputError: ``split`` is not ``"train"`` or ``"test"``.
        DataError: the files are missing, unreadable or malformed.
    """
    if split not in _SPLIT_PREFIX:
        raise InputError(f"split must be 'train' or 'test', got {split!r}")
    root = Path(root)
    prefix = _SPLIT_PREFIX[split]
    images_path = root / f"{prefix}-images-idx3-ubyte.gz"
    labels_path = root / f"{prefix}-labels-idx1-ubyte.gz"
    for path in (images_path, labels_path):
        if not path.is_file():
            raise DataError(f"Fashion-MNIST file {path} is missing; {_INSTALL_HINT}")
    images = _read_idx(images_path, _IMAGES_MAGIC, 3)
    labels = _read_idx(labels_path, _LABELS_MAGIC, 1).astype(np.int64)
    if images.shape[0] != labels.shape[0]:
        raise DataError(
            f"Fashion-MNIST {split} split has {images.shape[0]} images but {labels.shape[0]} labels"
        )
    if images.shape[1:] != (28, 28):
        raise DataError(
            f"Fashion-MNIST {split} images have shape {images.shape[1:]}, expected (28, 28)"
        )
    return images.copy(), labels


def as_model_input(images_uint8: np.ndarray) -> np.ndarray:
    """Convert ``uint8 [N, 28, 28]`` (or ``[N, 1, 28, 28]``) images to ``float32 [N, 1, 28, 28]``
    in ``[0, 1]`` (pixel / 255), the input layout of the default model."""
    images = np.asarray(images_uint8)
    if images.dtype != np.uint8:
        raise InputError(f"images must be uint8, got {images.dtype}")
    if images.ndim == 3:
        images = images[:, None, :, :]
    if images.ndim != 4 or images.shape[1] != 1:
        raise InputError(
            f"images must have shape [N, 28, 28] or [N, 1, 28, 28], got {images.shape}"
        )
    return images.astype(np.float32) / np.float32(255.0)


def _bilinear_resize(images: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Bilinear resize of ``float [N, H, W]`` to ``[N, out_h, out_w]`` with half-pixel centres
    (the ``align_corners=False`` convention), edges clamped."""
    _, in_h, in_w = images.shape

    def axis(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        src = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
        src = np.clip(src, 0.0, n_in - 1)
        lo = np.floor(src).astype(np.int64)
        hi = np.minimum(lo + 1, n_in - 1)
        return lo, hi, src - lo

    y0, y1, wy = axis(in_h, out_h)
    x0, x1, wx = axis(in_w, out_w)
    top = images[:, y0, :] * (1.0 - wy)[None, :, None] + images[:, y1, :] * wy[None, :, None]
    return top[:, :, x0] * (1.0 - wx)[None, None, :] + top[:, :, x1] * wx[None, None, :]


def load_digits_28() -> tuple[np.ndarray, np.ndarray]:
    """Load scikit-learn's bundled 8x8 digits, resized to Fashion-MNIST's layout.

    The 1,797 images (values 0..16, 0 = background) are rescaled to 0..255 and resized to 28x28
    with bilinear interpolation in numpy. Requires scikit-learn (imported lazily).

    Returns:
        ``(images, labels)``: images ``uint8 [1797, 28, 28]``, labels ``int64 [1797]`` in ``0..9``
        (digit values, unrelated to Fashion-MNIST classes).

    Raises:
        DataError: scikit-learn is not installed.
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise DataError(
            "the digits data set needs scikit-learn; install it with "
            "`pip install 'guard-classifier[eval]'`"
        ) from None
    bunch = load_digits()
    images = np.asarray(bunch.images, dtype=np.float64) * (255.0 / 16.0)  # [N, 8, 8]
    resized = _bilinear_resize(images, 28, 28)
    out = np.clip(np.rint(resized), 0, 255).astype(np.uint8)
    return out, np.asarray(bunch.target, dtype=np.int64)


# ------------------------------------------------------------------ MNIST and notMNIST (shared)
#: Environment variable naming the shared data folder (it wins over the default locations).
SHARED_DATASETS_ENV = "GUARD_SHARED_DATASETS"
_REPO_ROOT = Path(__file__).resolve().parents[1]
#: notMNIST's classes: font glyphs of the letters A-J (labels 0-9).
NOTMNIST_CLASSES: tuple[str, ...] = tuple("ABCDEFGHIJ")
_SHARED_HINT = (
    f"set {SHARED_DATASETS_ENV} to the folder holding the shared IDX files (the project's "
    f"shared/datasets: mnist-t10k-*, notmnist-t10k-*)"
)


def shared_datasets_dir() -> Path:
    """The shared data folder: ``$GUARD_SHARED_DATASETS`` when set, else ``../shared/datasets``
    relative to the repository root, else ``/work/shared/datasets``; the first that exists.

    Raises:
        DataError: none of them exists (the message lists where it looked).
    """
    env = os.environ.get(SHARED_DATASETS_ENV)
    if env:
        path = Path(env)
        if not path.is_dir():
            raise DataError(f"{SHARED_DATASETS_ENV}={env} is not a directory")
        return path
    tried = [_REPO_ROOT.parent / "shared" / "datasets", Path("/work/shared/datasets")]
    for path in tried:
        if path.is_dir():
            return path
    raise DataError(
        f"the shared data folder is missing (looked in {', '.join(map(str, tried))}); "
        f"{_SHARED_HINT}"
    )


def _load_shared(stem: str, what: str) -> tuple[np.ndarray, np.ndarray]:
    root = shared_datasets_dir()
    images = _read_idx(
        root / f"{stem}-t10k-images-idx3-ubyte.gz", _IMAGES_MAGIC, 3, what, _SHARED_HINT
    )
    labels = _read_idx(
        root / f"{stem}-t10k-labels-idx1-ubyte.gz", _LABELS_MAGIC, 1, what, _SHARED_HINT
    ).astype(np.int64)
    if images.shape[0] != labels.shape[0] or images.shape[1:] != (28, 28):
        raise DataError(
            f"{what} in {root}: {images.shape} images and {labels.shape} labels, expected "
            f"(N, 28, 28) and (N,)"
        )
    return images.copy(), labels


def load_mnist() -> tuple[np.ndarray, np.ndarray]:
    """MNIST's 10,000 test images (handwritten digits) from the shared data folder.

    Returns ``(images uint8 [10000, 28, 28], labels int64 [10000])`` (digit values 0..9).
    Raises DataError when the files are missing or malformed."""
    return _load_shared("mnist", "MNIST")


def load_notmnist() -> tuple[np.ndarray, np.ndarray]:
    """notMNIST's 10,000 glyphs of the letters A-J (labels 0..9, :data:`NOTMNIST_CLASSES`) from
    the shared data folder, as :func:`load_mnist`."""
    return _load_shared("notmnist", "notMNIST")


def split_8k(n: int = 10_000, n_train: int = 8_000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The seeded split of ``n`` images into ``n_train`` training and ``n - n_train`` test
    indices (each sorted): how the suite's MNIST / notMNIST models were trained (8,000 images)
    and are tested (the other 2,000)."""
    if not 0 < n_train < n:
        raise InputError(f"expected 0 < n_train < n, got n_train={n_train}, n={n}")
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[:n_train]), np.sort(perm[n_train:])
