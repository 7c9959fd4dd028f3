"""Evaluation sets for out-of-distribution detection: all local or generated, nothing downloaded.

Every function returns model inputs ``float32 [N, 1, 28, 28]`` in ``[0, 1]`` (the default model's
layout) and is deterministic: subsets and noise come from ``numpy.random.default_rng(seed)``.

* In-distribution: :func:`fmnist_test` (Fashion-MNIST test images, optionally of some classes).
* Far OOD: :func:`digits` (scikit-learn's 8x8 digits resized to 28x28), :func:`uniform_noise`,
  :func:`gaussian_noise` (mean 0.5, sd 0.25, clipped), :func:`constant_images` (flat gray levels).
* Near OOD: :func:`fmnist_test` with ``classes=(8, 9)`` for a model trained on classes 0-7.
* Covariate shift (same classes, changed appearance; report, do not count as OOD):
  :func:`inverted`, :func:`rotated90`, :func:`blurred`, applied to any inputs, and
  :func:`shifted_fmnist_test` for the Fashion-MNIST test set.

:data:`FAR_OOD` and :data:`COVARIATE_SHIFT` map names to these loaders.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from ..datasets import as_model_input, load_digits_28, load_fashion_mnist
from ..errors import InputError

__all__ = [
    "COVARIATE_SHIFT",
    "FAR_OOD",
    "blurred",
    "constant_images",
    "digits",
    "fmnist_test",
    "fmnist_train",
    "gaussian_noise",
    "inverted",
    "rotated90",
    "shifted_fmnist_test",
    "uniform_noise",
]

_SHAPE = (1, 28, 28)


def _subset(n_total: int, n: int | None, seed: int) -> np.ndarray:
    """Indices of ``n`` of ``n_total`` items (seeded, sorted), or all of them for ``None``."""
    if n is None or n >= n_total:
        return np.arange(n_total)
    if n < 1:
        raise InputError(f"n must be >= 1, got {n}")
    return np.sort(np.random.default_rng(seed).choice(n_total, size=n, replace=False))


def _fmnist(
    split: str, n: int | None, seed: int, classes: Sequence[int] | None
) -> tuple[np.ndarray, np.ndarray]:
    x, y = load_fashion_mnist(split)
    if classes is not None:
        keep = np.isin(y, list(classes))
        x, y = x[keep], y[keep]
    idx = _subset(len(x), n, seed)
    return as_model_input(x[idx]), y[idx]


def fmnist_test(
    n: int | None = None, seed: int = 0, classes: Sequence[int] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST test inputs and their original labels (0..9).

    Args:
        n: a seeded random subset of this size (in original order); ``None`` = all.
        seed: seed of the subset.
        classes: keep only these classes (labels are *not* remapped).
    """
    return _fmnist("test", n, seed, classes)


def fmnist_train(
    n: int | None = None, seed: int = 0, classes: Sequence[int] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST training inputs and labels; arguments as :func:`fmnist_test`."""
    return _fmnist("train", n, seed, classes)


def digits(n: int | None = None, seed: int = 0) -> np.ndarray:
    """scikit-learn's 1,797 handwritten digits resized to 28x28 (white on black like FMNIST)."""
    x, _ = load_digits_28()
    return as_model_input(x[_subset(len(x), n, seed)])


def uniform_noise(n: int = 1000, seed: int = 1) -> np.ndarray:
    """Pixels i.i.d. uniform on [0, 1)."""
    return np.random.default_rng(seed).random((n, *_SHAPE), dtype=np.float32)


def gaussian_noise(n: int = 1000, seed: int = 2, mean: float = 0.5, sd: float = 0.25) -> np.ndarray:
    """Pixels i.i.d. normal(mean, sd) clipped to [0, 1]."""
    g = np.random.default_rng(seed).normal(mean, sd, size=(n, *_SHAPE))
    return np.clip(g, 0.0, 1.0).astype(np.float32)


def constant_images(n: int = 256) -> np.ndarray:
    """Flat images of ``n`` gray levels evenly spaced in [0, 1] (n = 256: every 8-bit level)."""
    if n < 1:
        raise InputError(f"n must be >= 1, got {n}")
    levels = np.linspace(0.0, 1.0, n, dtype=np.float64).astype(np.float32)
    return np.broadcast_to(levels[:, None, None, None], (n, *_SHAPE)).copy()


# ----------------------------------------------------------------------- covariate shift
def _check(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 4:
        raise InputError(f"expected inputs [N, C, H, W], got {x.shape}")
    return x


def inverted(x: np.ndarray) -> np.ndarray:
    """``1 - x``: black clothes on a white background."""
    return (1.0 - _check(x)).astype(np.float32)


def rotated90(x: np.ndarray, k: int = 1) -> np.ndarray:
    """Rotated by ``k`` x 90 degrees counter-clockwise in the image plane."""
    return np.ascontiguousarray(np.rot90(_check(x), k=k, axes=(2, 3)))


def blurred(x: np.ndarray, sigma: float = 1.0) -> np.ndarray:
    """Gaussian blur of each image (``scipy.ndimage.gaussian_filter``, ``sigma`` pixels,
    truncated at 4 sigma, edges reflected); stays in [0, 1]."""
    from scipy.ndimage import gaussian_filter

    x = _check(x)
    out = gaussian_filter(x.astype(np.float64), sigma=(0, 0, sigma, sigma), mode="reflect")
    return np.clip(out, 0.0, 1.0).astype(np.float32)


_SHIFTS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "inverted": inverted,
    "rotated90": rotated90,
    "blurred": blurred,
}


def shifted_fmnist_test(
    kind: str, n: int | None = None, seed: int = 0, classes: Sequence[int] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST test inputs (as :func:`fmnist_test`) under a shift: ``inverted``,
    ``rotated90`` or ``blurred``; labels unchanged."""
    if kind not in _SHIFTS:
        raise InputError(f"unknown shift {kind!r}; choose from {sorted(_SHIFTS)}")
    x, y = fmnist_test(n, seed, classes)
    return _SHIFTS[kind](x), y


#: Far-OOD sets: name -> loader(n) returning inputs (``n=None``: the loader's default size).
FAR_OOD: dict[str, Callable[..., np.ndarray]] = {
    "digits": lambda n=None: digits(n),
    "uniform": lambda n=None: uniform_noise(1000 if n is None else n),
    "gaussian": lambda n=None: gaussian_noise(1000 if n is None else n),
    "constant": lambda n=None: constant_images(256 if n is None else n),
}

#: Covariate-shift sets: name -> loader(n, seed) returning (inputs, labels).
COVARIATE_SHIFT: dict[str, Callable[..., tuple[np.ndarray, np.ndarray]]] = {
    name: (lambda n=None, seed=0, _k=name: shifted_fmnist_test(_k, n, seed)) for name in _SHIFTS
}
