"""The models and data sets of the multi-model OOD suite (:mod:`.suite`): every model with its
training inputs, its in-distribution test inputs and its own far- and near-OOD sets.

=================  ===========================================  ==================================
model              in distribution                              out of distribution
=================  ===========================================  ==================================
``fmnist``         Fashion-MNIST (default model, 1x28x28)       MNIST, notMNIST, digits, noise,
                                                                constant images
``fmnist_8cls``    Fashion-MNIST classes 0-7                    classes 8/9 (near OOD), MNIST
``mnist``          MNIST: 8,000 images train; of the other      Fashion-MNIST, notMNIST, noise,
                   2,000, 1,000 calibrate, 1,000 test           constant images
``notmnist``       notMNIST: the same split                     MNIST, Fashion-MNIST, digits,
                                                                noise, constant images
``fmnist_rgb``     Fashion-MNIST through ``to_rgb32``           the ``fmnist`` sets through
                   (ResNet-20, 3x32x32)                         ``to_rgb32``
=================  ===========================================  ==================================

The MNIST and notMNIST models were trained on all 8,000 of their training images, so those are no
calibration data exchangeable with test images (the model fits its own training images better:
calibrated on them, the false-abstain rate on test images runs above target). They are
calibrated as ``guard fit --calib`` does: on 1,000 of the 2,000 held-out images (seeded), and
tested on the other 1,000. The Fashion-MNIST models saw all 60,000 training images too, but fit
them about as well as the test images; they use ``guard fit``'s default, 10% of the training
inputs held out from the hull.

The digits (scikit-learn's, handwritten) are no OOD set for the MNIST model: same classes. All
sets are local (Debian's Fashion-MNIST, the shared MNIST / notMNIST files, scikit-learn) or
generated with fixed seeds; nothing is downloaded. A model whose ONNX file is missing is skipped
by the suite (the RGB model is optional).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..datasets import as_model_input, load_mnist, load_notmnist, split_8k
from . import sets as evalsets

__all__ = ["ASSETS", "MODELS", "ModelData", "SuiteModel", "Sizes", "rgb32"]

ASSETS = Path(__file__).resolve().parents[1] / "assets"


@dataclass(frozen=True)
class Sizes:
    """How much of each set the suite uses (seeded subsets; a set smaller than its cap is used
    whole).

    Attributes:
        n_train: training inputs of the Fashion-MNIST models (of 60,000; the MNIST and notMNIST
            models use their 8,000). The guard holds out 10% of them to calibrate, as ``guard
            fit`` does.
        n_id: in-distribution test inputs.
        n_ood: inputs per OOD set.
        seed: seed of every subset.
    """

    n_train: int = 20_000
    n_id: int = 2_000
    n_ood: int = 2_000
    seed: int = 0


@dataclass(frozen=True)
class ModelData:
    """One model's inputs: ``train_x`` (N, ...) with labels ``train_y`` (N,) in the model's class
    order, ``id_x`` in-distribution test inputs, ``ood`` set name -> inputs, and ``calib_x``:
    held-out in-distribution inputs to calibrate on (``guard fit --calib``), or ``None`` to
    hold out 10% of the training inputs (``guard fit``'s default)."""

    train_x: np.ndarray
    train_y: np.ndarray
    id_x: np.ndarray
    ood: dict[str, np.ndarray] = field(default_factory=dict)
    calib_x: np.ndarray | None = None


@dataclass(frozen=True)
class SuiteModel:
    """A model of the suite: ``onnx`` file name in ``guard/assets``, a one-line ``description``
    and ``load(sizes) -> ModelData``."""

    name: str
    onnx: str
    description: str
    load: Callable[[Sizes], ModelData]

    @property
    def path(self) -> Path:
        return ASSETS / self.onnx


def rgb32(x: np.ndarray) -> np.ndarray:
    """``[N, 1, 28, 28]`` -> ``[N, 3, 32, 32]``: 2 pixels of zero padding, grey channel repeated
    (numpy twin of :func:`guard.model.nets.to_rgb32`, without torch)."""
    x = np.asarray(x, dtype=np.float32)
    return np.ascontiguousarray(np.repeat(np.pad(x, ((0, 0), (0, 0), (2, 2), (2, 2))), 3, axis=1))


def _take(x: np.ndarray, n: int, seed: int) -> np.ndarray:
    if n >= len(x):
        return x
    return x[np.sort(np.random.default_rng(seed).choice(len(x), n, replace=False))]


def _halves(x: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded split of held-out inputs into a calibration half and a test half."""
    perm = np.random.default_rng(seed).permutation(len(x))
    h = len(x) // 2
    return x[np.sort(perm[:h])], x[np.sort(perm[h:])]


def _noise(s: Sizes) -> dict[str, np.ndarray]:
    n = min(s.n_ood, 1000)
    return {
        "uniform noise": evalsets.uniform_noise(n, seed=s.seed + 1),
        "Gaussian noise": evalsets.gaussian_noise(n, seed=s.seed + 2),
        "constant": evalsets.constant_images(min(s.n_ood, 256)),
    }


def _mnist() -> np.ndarray:
    return as_model_input(load_mnist()[0])


def _notmnist(s: Sizes, which: str = "all") -> tuple[np.ndarray, np.ndarray]:
    x, y = load_notmnist()
    if which != "all":
        tr, te = split_8k(len(x))
        x, y = x[tr if which == "train" else te], y[tr if which == "train" else te]
    return as_model_input(x), y


def _fmnist_ood(s: Sizes) -> dict[str, np.ndarray]:
    return {
        "MNIST": _take(_mnist(), s.n_ood, s.seed),
        "notMNIST": _take(_notmnist(s)[0], s.n_ood, s.seed),
        "digits": evalsets.digits(min(s.n_ood, 1797), seed=s.seed),
        **_noise(s),
    }


def _fmnist(s: Sizes) -> ModelData:
    x, y = evalsets.fmnist_train(s.n_train, seed=s.seed)
    x_id, _ = evalsets.fmnist_test(s.n_id, seed=s.seed)
    return ModelData(x, y, x_id, _fmnist_ood(s))


def _fmnist_8cls(s: Sizes) -> ModelData:
    keep = list(range(8))
    x, y = evalsets.fmnist_train(s.n_train, seed=s.seed, classes=keep)
    x_id, _ = evalsets.fmnist_test(s.n_id, seed=s.seed, classes=keep)
    x_near, _ = evalsets.fmnist_test(s.n_ood, seed=s.seed, classes=(8, 9))
    ood = {"classes 8/9 (near)": x_near, "MNIST": _take(_mnist(), s.n_ood, s.seed)}
    return ModelData(x, y, x_id, ood)


def _mnist_model(s: Sizes) -> ModelData:
    x, y = load_mnist()
    tr, te = split_8k(len(x))
    ood = {
        "Fashion-MNIST": evalsets.fmnist_test(s.n_ood, seed=s.seed)[0],
        "notMNIST": _take(_notmnist(s)[0], s.n_ood, s.seed),
        **_noise(s),
    }
    x_cal, x_id = _halves(as_model_input(x[te]), s.seed)
    return ModelData(as_model_input(x[tr]), y[tr], _take(x_id, s.n_id, s.seed), ood, x_cal)


def _notmnist_model(s: Sizes) -> ModelData:
    x_tr, y_tr = _notmnist(s, "train")
    x_te, _ = _notmnist(s, "test")
    ood = {
        "MNIST": _take(_mnist(), s.n_ood, s.seed),
        "Fashion-MNIST": evalsets.fmnist_test(s.n_ood, seed=s.seed)[0],
        "digits": evalsets.digits(min(s.n_ood, 1797), seed=s.seed),
        **_noise(s),
    }
    x_cal, x_id = _halves(x_te, s.seed)
    return ModelData(x_tr, y_tr, _take(x_id, s.n_id, s.seed), ood, x_cal)


def _fmnist_rgb(s: Sizes) -> ModelData:
    d = _fmnist(s)
    return ModelData(
        rgb32(d.train_x), d.train_y, rgb32(d.id_x), {k: rgb32(v) for k, v in d.ood.items()}
    )


#: The suite's models, in table order.
MODELS: tuple[SuiteModel, ...] = (
    SuiteModel(
        "fmnist", "fmnist_resnet.onnx", "Fashion-MNIST default (FashionResNet, 1x28x28)", _fmnist
    ),
    SuiteModel(
        "fmnist_8cls",
        "fmnist_resnet_8cls.onnx",
        "Fashion-MNIST classes 0-7 (FashionResNet); near OOD = classes 8/9",
        _fmnist_8cls,
    ),
    SuiteModel(
        "mnist",
        "mnist_resnet.onnx",
        "MNIST, 8,000 training images (FashionResNet)",
        _mnist_model,
    ),
    SuiteModel(
        "notmnist",
        "notmnist_resnet.onnx",
        "notMNIST, 8,000 training images (FashionResNet)",
        _notmnist_model,
    ),
    SuiteModel(
        "fmnist_rgb",
        "fmnist_resnet20_rgb.onnx",
        "Fashion-MNIST through to_rgb32 (ResNet-20, 3x32x32)",
        _fmnist_rgb,
    ),
)
