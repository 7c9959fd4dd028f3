"""The inputs a report is computed on: the training data the artifact was fitted on, labelled
test data, out-of-distribution sets and (optionally) covariate-shifted test sets.

Either the built-in Fashion-MNIST sets (:func:`builtin`) or the user's own ``.npz`` files
(:func:`from_files`). :func:`check_against` verifies that the training data really is the data
the artifact was fitted on (the support indices of hull projections point into it).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ...errors import InputError


@dataclass
class ReportData:
    """Inputs exactly as the model takes them.

    Attributes:
        name: data set name for the report's headings.
        x_train, y_train: the data given to ``guard fit`` (``y_train`` may be None).
        x_test, y_test: labelled in-distribution test data.
        ood: name -> out-of-distribution inputs.
        shift: name -> (inputs, labels) covariate-shifted test data (reported, not OOD).
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray | None
    x_test: np.ndarray
    y_test: np.ndarray
    ood: dict[str, np.ndarray] = field(default_factory=dict)
    shift: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)


def builtin(n_test: int, n_shift: int, seed: int = 0) -> ReportData:
    """Fashion-MNIST (60,000 training images, ``n_test`` test images), the far-OOD sets of
    :mod:`guard.evaluation.sets` and its covariate shifts (``n_shift`` images each; 0 = none)."""
    from .. import sets as evalsets
    from ..ood import shift_sets

    x_train, y_train = evalsets.fmnist_train(None)
    x_test, y_test = evalsets.fmnist_test(n_test, seed=seed)
    ood = {name: load() for name, load in evalsets.FAR_OOD.items()}
    shift = shift_sets(n_shift, seed) if n_shift else {}
    return ReportData("Fashion-MNIST", x_train, y_train, x_test, y_test, ood, shift)


def from_files(
    train: str, test: str, ood: list[str], n_test: int | None, seed: int = 0
) -> ReportData:
    """Data from ``.npz`` files: ``train`` and ``test`` with ``x`` and ``y``; ``ood`` entries
    ``NAME=PATH`` with ``x``."""
    from ...npz import load_npz

    tr = load_npz(train, "x", ("y",))
    te = load_npz(test, "x", ("y",))
    if "y" not in te:
        raise InputError(f"{test} needs labels 'y' for the report's accuracy figures")
    x_test, y_test = te["x"], _int_labels(te["y"], len(te["x"]), test)
    if n_test is not None and n_test < len(x_test):
        pick = np.sort(np.random.default_rng(seed).choice(len(x_test), n_test, replace=False))
        x_test, y_test = x_test[pick], y_test[pick]
    sets = {}
    for spec in ood:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise InputError(f"--ood expects NAME=PATH.npz, got {spec!r}")
        sets[name] = load_npz(path, "x")["x"]
    y_train = _int_labels(tr["y"], len(tr["x"]), train) if "y" in tr else None
    return ReportData("test", tr["x"], y_train, x_test, y_test, sets)


def _int_labels(y: np.ndarray, n: int, path: str) -> np.ndarray:
    if y.dtype.kind not in "iu" or y.shape != (n,):
        raise InputError(
            f"{path}: expected integer labels 'y' of shape ({n},), got {y.dtype} {y.shape}"
        )
    return y.astype(np.int64)


def check_against(data: ReportData, guard, n_check: int = 32) -> None:
    """Raise :class:`InputError` unless ``data.x_train`` is the data ``guard`` was fitted on:
    the features of a few of its images must equal the artifact's stored training features."""
    idx = guard.train_index_
    if len(data.x_train) <= int(idx.max()):
        raise InputError(
            f"the training data has {len(data.x_train)} inputs but the artifact "
            f"was fitted on at least {int(idx.max()) + 1}: pass the data given "
            f"to guard fit"
        )
    pick = np.linspace(0, len(idx) - 1, min(n_check, len(idx))).astype(int)
    feats = guard.model_.run(data.x_train[idx[pick]])[1]
    stored = guard.train_features_[pick]
    err = float(np.abs(feats - stored).max())
    if err > 1e-3 * (1.0 + float(np.abs(stored).max())):
        raise InputError(
            f"the training data is not the data this artifact was fitted on "
            f"(features differ by up to {err:.3g}): pass the data given to guard fit"
        )
