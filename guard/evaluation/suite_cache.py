"""An on-disk cache of the suite's geometry (:class:`~.suite.ModelEval`), for exploring scores.

Computing the guard's geometry of every input of a model (:func:`~.suite.prepare`) is the
suite's whole cost; every score is then a cheap function of it. With a cache directory
(``scripts/eval_ood_suite.py --cache DIR``) each model's :class:`~.suite.ModelEval` is stored
as one ``.npz`` file (no pickle: ``np.load(allow_pickle=False)`` reads it) and loaded instead of
recomputed when the same model file is run with the same sizes and seed.

The key is the model's name, the SHA-256 of its ONNX file, the :class:`~.suite_data.Sizes` and
the cache format. It does **not** cover the guard's own code: after a change to the geometry
(``guard/geometry/``) or to the data sets, delete the directory. The committed report is made
without a cache.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import fields
from pathlib import Path

import numpy as np

from ..detectors import Evidence
from .suite import ModelEval, prepare
from .suite_data import Sizes, SuiteModel

__all__ = ["cache_path", "load_eval", "prepared", "save_eval"]

log = logging.getLogger(__name__)

_FORMAT = 1
_SETS = ("calib", "id")


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def cache_path(directory: Path, model: SuiteModel, sizes: Sizes) -> Path:
    """Where ``model``'s geometry at ``sizes`` is cached in ``directory``."""
    s = sizes
    key = f"{model.name}-{_digest(model.path)}-{s.n_train}-{s.n_id}-{s.n_ood}-{s.seed}-v{_FORMAT}"
    return Path(directory) / f"{key}.npz"


def save_eval(ev: ModelEval, path: Path) -> None:
    """Write ``ev`` to ``path`` (``.npz``; written to a temporary name, then renamed)."""
    arrays: dict[str, np.ndarray] = {
        "train_features": ev.train_features,
        "train_labels": ev.train_labels,
        "W": ev.W,
        "b": ev.b,
    }
    sets = {"calib": ev.calib, "id": ev.id} | {f"ood{i}": e for i, e in enumerate(ev.ood.values())}
    for key, e in sets.items():
        for f in fields(e):
            a = getattr(e, f.name)
            if a is not None:
                arrays[f"{key}.{f.name}"] = a
    meta = {
        "format": _FORMAT,
        "model": ev.model.name,
        "ood": list(ev.ood),
        "seed": ev.seed,
        "seconds": ev.seconds,
    }
    arrays["meta"] = np.array(json.dumps(meta))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **arrays)  # type: ignore[arg-type]  # numpy stub: **kwds typed as bool
    tmp.replace(path)


def load_eval(path: Path, model: SuiteModel) -> ModelEval:
    """The :class:`~.suite.ModelEval` :func:`save_eval` wrote for ``model``; ``ValueError`` if
    the file is of another model or format."""
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(str(arrays["meta"]))
    if meta.get("format") != _FORMAT or meta.get("model") != model.name:
        raise ValueError(f"{path} is not a cached geometry of {model.name} (format {_FORMAT})")

    def evidence(key: str) -> Evidence:
        return Evidence(**{f.name: arrays.get(f"{key}.{f.name}") for f in fields(Evidence)})

    return ModelEval(
        model=model,
        train_features=arrays["train_features"],
        train_labels=arrays["train_labels"],
        W=arrays["W"],
        b=arrays["b"],
        calib=evidence("calib"),
        id=evidence("id"),
        ood={name: evidence(f"ood{i}") for i, name in enumerate(meta["ood"])},
        seed=int(meta["seed"]),
        seconds=float(meta["seconds"]),
    )


def prepared(
    model: SuiteModel, sizes: Sizes, cache: Path | None = None, *, progress: bool = False
) -> ModelEval:
    """:func:`~.suite.prepare`, through the cache directory ``cache`` when one is given."""
    if cache is None:
        return prepare(model, sizes, progress=progress)
    path = cache_path(cache, model, sizes)
    if path.is_file():
        log.info("  %s: geometry from the cache %s", model.name, path)
        return load_eval(path, model)
    ev = prepare(model, sizes, progress=progress)
    save_eval(ev, path)
    return ev
