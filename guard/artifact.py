"""Versioned artifact directory of a fitted :class:`~guard.estimator.Guard`. No pickle anywhere.

Layout::

    manifest.json        schema version, package version, model sha256, shapes, the state's
                         settings and fitted scalars, sha256 of every other file
    model.onnx           the classifier the guard was fitted on (absent for feature-only guards)
    <name>.npy           one file per fitted array of the state (W, b, train_features, radii, ...)
    ood.npz              the combined OOD score's arrays, when the guard has one

This module only writes, hashes and reads files: what the state means is
:class:`~guard.estimator.GuardState`'s business (:meth:`Guard.to_state` /
:meth:`Guard.from_state`). The directory is written under a temporary name and renamed at the
end, so a crash never leaves a half-written artifact behind. Loading is strict: another schema, a
missing or altered file, or a model whose sha256 differs from the one fitted is refused.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ArtifactError, InputError
from .estimator import Guard, GuardState
from .geometry.errors import GeometryError
from .model import OnnxClassifier
from .version import __version__

#: 2: one .npy per state array, no FAISS index file (the hull index is built on load).
SCHEMA_VERSION = 2
_MANIFEST_KEYS = ("files", "model", "params", "fitted", "arrays")
_OOD_FILE = "ood.npz"


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def save_artifact(guard: Guard, out: str | Path, *, overwrite: bool = False) -> Path:
    """Write a fitted guard to directory ``out`` (atomically) and return its path."""
    state = guard.to_state()
    model = guard.model_
    out = Path(out)
    if out.exists() and not overwrite:
        raise ArtifactError(f"{out} already exists (pass overwrite=True / --overwrite to replace)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        files: dict[str, str] = {}
        for name, arr in state.arrays.items():
            np.save(tmp / f"{name}.npy", arr, allow_pickle=False)
            files[f"{name}.npy"] = _sha256_file(tmp / f"{name}.npy")
        if state.ood is not None:
            np.savez(tmp / _OOD_FILE, **state.ood)  # type: ignore[arg-type]  # numpy stub
            files[_OOD_FILE] = _sha256_file(tmp / _OOD_FILE)
        if model is not None:
            (tmp / "model.onnx").write_bytes(model.data)
        W = state.arrays["W"]
        manifest = {
            "schema_version": SCHEMA_VERSION,
            "guard_version": __version__,
            "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "model": None
            if model is None
            else {
                "file": "model.onnx",
                "sha256": model.sha256,
                "input_name": model.input_name,
                "input_shape": list(model.input_shape),
                "logits": model.logits_name,
                "features": model.features_name,
            },
            "n_features": int(W.shape[1]),
            "n_classes": int(W.shape[0]),
            "counts": {
                "n_train": int(state.arrays["train_features"].shape[0]),
                "n_labelled": int(len(state.arrays.get("train_labels", ()))),
            },
            "params": state.params,
            "fitted": state.fitted,
            "arrays": sorted(state.arrays),
            "files": files,
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def read_manifest(path: str | Path) -> dict[str, Any]:
    """The manifest of an artifact directory, with its schema version checked."""
    path = Path(path)
    mpath = path / "manifest.json"
    if not mpath.is_file():
        raise ArtifactError(f"{path} is not a guard artifact (no manifest.json); run `guard fit`")
    try:
        manifest = json.loads(mpath.read_text())
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"cannot read {mpath}: {exc}") from None
    version = manifest.get("schema_version") if isinstance(manifest, dict) else None
    if version != SCHEMA_VERSION:
        raise ArtifactError(
            f"{path} has artifact schema {version}, this guard {__version__} reads schema "
            f"{SCHEMA_VERSION}: refit with `guard fit`"
        )
    missing = [k for k in _MANIFEST_KEYS if k not in manifest]
    if missing:
        raise ArtifactError(f"{mpath} lacks {missing}: the artifact is corrupt, refit it")
    return manifest


def _model(path: Path, fitted: dict | None, model: Any) -> OnnxClassifier | None:
    """The artifact's model, or the given one after checking it is the model fitted on."""
    if model is not None and not isinstance(model, OnnxClassifier):
        model = OnnxClassifier(model)
    if model is not None:
        if fitted is None or model.sha256 != fitted["sha256"]:
            raise ArtifactError(
                f"model sha256 {model.sha256[:12]}… differs from the model this artifact was "
                f"fitted on ({(fitted or {}).get('sha256', 'none')[:12]}…): refit with `guard fit`"
            )
        return model
    if fitted is None:
        return None
    mfile = path / fitted["file"]
    if not mfile.is_file():
        raise ArtifactError(f"{mfile} is missing")
    # Hash before parsing: a corrupted file must be refused as modified, not fail to parse.
    if _sha256_file(mfile) != fitted["sha256"]:
        raise ArtifactError(f"{mfile} was modified after fitting (sha256 differs): refit")
    return OnnxClassifier(mfile)


def load_artifact(
    path: str | Path,
    model: str | Path | bytes | OnnxClassifier | None = None,
    *,
    progress: bool = False,
    device: str = "auto",
) -> Guard:
    """Load a fitted guard; ``model`` (optional) must be the very model it was fitted on.
    ``device``: where its scans run (:mod:`guard.geometry.accel`: auto, cpu or cuda)."""
    path = Path(path)
    manifest = read_manifest(path)
    for name, digest in manifest["files"].items():
        f = path / name
        if not f.is_file() or _sha256_file(f) != digest:
            raise ArtifactError(f"{f} is missing or was modified after fitting: refit the artifact")
    clf = _model(path, manifest["model"], model)
    arrays = {}
    for name in manifest["arrays"]:
        if f"{name}.npy" not in manifest["files"]:
            raise ArtifactError(f"{path}: array {name!r} has no hashed file: refit the artifact")
        arrays[name] = np.load(path / f"{name}.npy", allow_pickle=False)
    ood = None
    if _OOD_FILE in manifest["files"]:
        with np.load(path / _OOD_FILE, allow_pickle=False) as z:
            ood = {k: z[k] for k in z.files}
    state = GuardState(params=manifest["params"], fitted=manifest["fitted"], arrays=arrays, ood=ood)
    try:
        return Guard.from_state(state, clf, progress=progress, device=device)
    except GeometryError as exc:
        if "device" in str(exc):  # the caller's run-time choice, not the artifact's fault
            raise
        raise ArtifactError(f"{path} does not hold a valid guard ({exc}): refit it") from None
    except (InputError, KeyError, TypeError, ValueError) as exc:
        raise ArtifactError(f"{path} does not hold a valid guard ({exc}): refit it") from None
