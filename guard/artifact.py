"""Versioned artifact directory of a fitted :class:`~guard.estimator.Guard`. No pickle anywhere.

Layout::

    manifest.json        schema version, package version, model sha256, shapes, the state's
                         settings and fitted scalars, the array files and their sha256
    model.onnx           the classifier the guard was fitted on (absent for feature-only guards)
    <name>.npy           one file per fitted array of the state (W, b, train_features, radii,
                         reference_inputs, ...)
    ood.npz              the combined OOD score's arrays, when the guard has one
    digest.json          sha256 of every other file, manifest.json included; written last

This module only writes, hashes and reads files: what the state means is
:class:`~guard.estimator.GuardState`'s business (:meth:`Guard.to_state` /
:meth:`Guard.from_state`). The directory is written under a temporary name and renamed at the
end, so a crash never leaves a half-written artifact behind.

Loading verifies everything it reads before using it, and refuses the artifact with one
:class:`~guard.errors.ArtifactError` line otherwise:

1. ``digest.json`` first: every file it lists (``manifest.json`` among them) must be a plain
   file in the directory with that sha256: a file edited, truncated, replaced or missing is
   refused by name;
2. the manifest: its schema, every field's type, only plain file names (no ``/``, no ``..``,
   no absolute path: nothing outside the directory is ever read), and exactly the files the
   digest lists;
3. the arrays (``.npy`` without pickle) and the state: every fitted field's type, dtype, shape,
   range and consistency (:func:`guard.estimator.check_state`);
4. the model: its sha256, the manifest's description of it, its final layer against ``W, b``
   and its outputs on the stored reference inputs (:meth:`Guard.check_model`).

What the digest is not: a signature. Whoever can rewrite every file of an artifact can recompute
every hash too; the digest catches edits, corruption, truncation and half-copied directories, not
a forger. Keep artifacts where only their owner can write.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from .atomic import atomic_directory
from .errors import ArtifactError, GuardError, InputError, ModelError
from .estimator import Guard, GuardState
from .geometry.errors import GeometryError
from .model import OnnxClassifier
from .version import __version__

#: 2: one .npy per state array, no FAISS index file (the hull index is built on load).
#: 3: digest.json over every file (the manifest included); the model's reference inputs and
#: outputs; every field validated at load.
#: 4: the hull of the L2-normalised training features (rebuilt from ``train_features`` at load)
#: and the default abstention score chosen on the multi-model OOD suite: a schema-3 artifact's
#: OOD score is the previous default, so it is refused (refit) rather than served unnoticed.
SCHEMA_VERSION = 4
MANIFEST = "manifest.json"
DIGEST = "digest.json"
_MODEL_FILE = "model.onnx"
_OOD_FILE = "ood.npz"
# The manifest's fields and their JSON types (bool is never an int here).
_MANIFEST_TYPES: dict[str, tuple[type, ...]] = {
    "schema_version": (int,),
    "guard_version": (str,),
    "created_at": (str,),
    "model": (dict, type(None)),
    "n_features": (int,),
    "n_classes": (int,),
    "counts": (dict,),
    "params": (dict,),
    "fitted": (dict,),
    "arrays": (list,),
    "files": (dict,),
}
_MODEL_TYPES: dict[str, tuple[type, ...]] = {
    "file": (str,),
    "sha256": (str,),
    "input_name": (str,),
    "input_shape": (list,),
    "logits": (str,),
    "features": (str,),
}
_COUNTS_TYPES: dict[str, tuple[type, ...]] = {"n_train": (int,), "n_labelled": (int,)}
# What np.load raises on a corrupt file (a zip archive for .npz).
_READ_ERRORS = (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error)


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def save_artifact(guard: Guard, out: str | Path, *, overwrite: bool = False) -> Path:
    """Write a fitted guard to directory ``out`` (atomically) and return its path."""
    state = guard.to_state()  # checked: what is saved can be loaded
    model = guard.model_
    out = Path(out)
    if out.exists() and not overwrite:
        raise ArtifactError(f"{out} already exists (pass overwrite=True / --overwrite to replace)")
    with atomic_directory(out) as tmp:
        files: dict[str, str] = {}
        for name, arr in state.arrays.items():
            np.save(tmp / f"{name}.npy", arr, allow_pickle=False)
            files[f"{name}.npy"] = _sha256_file(tmp / f"{name}.npy")
        if state.ood is not None:
            np.savez(tmp / _OOD_FILE, **state.ood)  # type: ignore[arg-type]  # numpy stub
            files[_OOD_FILE] = _sha256_file(tmp / _OOD_FILE)
        if model is not None:
            (tmp / _MODEL_FILE).write_bytes(model.data)
        W = state.arrays["W"]
        manifest = {
            "schema_version": SCHEMA_VERSION,
            "guard_version": __version__,
            "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "model": None
            if model is None
            else {
                "file": _MODEL_FILE,
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
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        # Last: the digest of every file, the manifest and the model included.
        digest = dict(files)
        for name in (MANIFEST, _MODEL_FILE) if model is not None else (MANIFEST,):
            digest[name] = _sha256_file(tmp / name)
        body = {"algorithm": "sha256", "files": dict(sorted(digest.items()))}
        (tmp / DIGEST).write_text(json.dumps(body, indent=2) + "\n")
    return out


# ------------------------------------------------------------------------------ loading
def _corrupt(where: Path, what: str) -> ArtifactError:
    return ArtifactError(f"{where}: {what}: the artifact is corrupt, refit it")


def _plain(path: Path, where: str, name: Any) -> str:
    """``name`` if it is a plain file name inside the artifact directory."""
    if (
        not isinstance(name, str)
        or name in ("", ".", "..")
        or any(c in name for c in "/\\\0")
        or Path(name).name != name
    ):
        raise _corrupt(
            path / where, f"{name!r} is not a plain file name inside the artifact directory"
        )
    return name


def _typed(value: Any, types: tuple[type, ...]) -> bool:
    return isinstance(value, types) and not (isinstance(value, bool) and bool not in types)


def _check_fields(mpath: Path, prefix: str, d: dict, types: dict[str, tuple[type, ...]]) -> None:
    missing = [k for k in types if k not in d]
    unknown = sorted(str(k) for k in d if k not in types)
    if missing or unknown:
        raise _corrupt(mpath, f"{prefix or 'the manifest'} lacks {missing}, has unknown {unknown}")
    for key, t in types.items():
        if not _typed(d[key], t):
            names = " or ".join("null" if x is type(None) else x.__name__ for x in t)
            raise _corrupt(mpath, f"{prefix}{key} is {d[key]!r}, expected {names}")


def _schema_error(path: Path, version: Any) -> ArtifactError:
    return ArtifactError(
        f"{path} has artifact schema {version}, this guard {__version__} reads schema "
        f"{SCHEMA_VERSION}: refit with `guard fit`"
    )


def _peek_schema(path: Path) -> Any:
    """The manifest's schema version, unverified: only to word an error message."""
    try:
        manifest = json.loads((path / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return manifest.get("schema_version") if isinstance(manifest, dict) else None


def _verify_digest(path: Path) -> dict[str, str]:
    """Step 1: the sha256 of every file of the artifact, each checked against digest.json."""
    if not (path / MANIFEST).is_file():
        raise ArtifactError(f"{path} is not a guard artifact (no {MANIFEST}); run `guard fit`")
    dpath = path / DIGEST
    if not dpath.is_file():
        version = _peek_schema(path)
        if _typed(version, (int,)) and version != SCHEMA_VERSION:
            raise _schema_error(path, version)
        raise ArtifactError(f"{path} is corrupt or incomplete ({DIGEST} is missing): refit it")
    try:
        digest = json.loads(dpath.read_text())
    except (OSError, ValueError) as exc:
        raise _corrupt(dpath, f"cannot read it ({exc})") from None
    files = digest.get("files") if isinstance(digest, dict) else None
    if (
        not isinstance(digest, dict)
        or set(digest) != {"algorithm", "files"}
        or digest["algorithm"] != "sha256"
        or not isinstance(files, dict)
        or not all(isinstance(h, str) for h in files.values())
    ):
        raise _corrupt(dpath, 'expected {"algorithm": "sha256", "files": {name: sha256}}')
    for name in files:
        _plain(path, DIGEST, name)
    if MANIFEST not in files or DIGEST in files:
        raise _corrupt(dpath, f"it must list {MANIFEST} and not itself")
    for name, expected in files.items():
        f = path / name
        if not f.is_file():
            raise ArtifactError(
                f"{f} is missing or not a file: the artifact is incomplete, refit it"
            )
        if _sha256_file(f) != expected:
            raise ArtifactError(
                f"{f} was modified after fitting (its sha256 differs from {DIGEST}): refit the "
                f"artifact"
            )
    return files


def _read_manifest_file(path: Path, digests: dict[str, str]) -> dict[str, Any]:
    """Step 2: the (hashed) manifest, with every field's type and every file name checked."""
    mpath = path / MANIFEST
    try:
        manifest = json.loads(mpath.read_text())
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"cannot read {mpath}: {exc}") from None
    if not isinstance(manifest, dict):
        raise _corrupt(mpath, f"a JSON {type(manifest).__name__}, expected an object")
    version = manifest.get("schema_version")
    if not _typed(version, (int,)) or version != SCHEMA_VERSION:
        raise _schema_error(path, version)
    _check_fields(mpath, "", manifest, _MANIFEST_TYPES)
    for key in ("n_features", "n_classes"):
        if manifest[key] < 1:
            raise _corrupt(mpath, f"{key} is {manifest[key]}, expected >= 1")
    _check_fields(mpath, "counts.", manifest["counts"], _COUNTS_TYPES)
    model = manifest["model"]
    if model is not None:
        _check_fields(mpath, "model.", model, _MODEL_TYPES)
        _plain(path, MANIFEST, model["file"])
        if not all(d is None or (_typed(d, (int,)) and d >= 1) for d in model["input_shape"]):
            raise _corrupt(mpath, f"model.input_shape is {model['input_shape']!r}")
    arrays, files = manifest["arrays"], manifest["files"]
    if not all(isinstance(a, str) for a in arrays) or len(set(arrays)) != len(arrays):
        raise _corrupt(mpath, f"arrays is {arrays!r}, expected distinct names")
    for name in [*(f"{a}.npy" for a in arrays), *files]:
        _plain(path, MANIFEST, name)
    if not all(isinstance(h, str) for h in files.values()):
        raise _corrupt(mpath, "files must map names to sha256 strings")
    expected = {f"{a}.npy" for a in arrays} | ({_OOD_FILE} & set(files))
    if set(files) != expected:
        raise _corrupt(mpath, f"files {sorted(files)} do not match arrays {sorted(arrays)}")
    named = set(files) | {MANIFEST} | (set() if model is None else {model["file"]})
    if named != set(digests):
        raise _corrupt(mpath, f"it names {sorted(named)}, {DIGEST} lists {sorted(digests)}")
    hashes = dict(files) | ({} if model is None else {model["file"]: model["sha256"]})
    for name, h in hashes.items():
        if h != digests[name]:
            raise _corrupt(mpath, f"the sha256 of {name} differs from {DIGEST}'s")
    return manifest


def _load_npy(f: Path) -> np.ndarray:
    try:
        arr = np.load(f, allow_pickle=False)
    except _READ_ERRORS as exc:
        raise _corrupt(f, f"not a readable .npy array without pickle ({exc})") from None
    if not isinstance(arr, np.ndarray):  # np.load opened an .npz archive
        arr.close()
        raise _corrupt(f, "an .npz archive, expected a .npy array")
    return arr


def _load_npz(f: Path) -> dict[str, np.ndarray]:
    try:
        z = np.load(f, allow_pickle=False)
        if isinstance(z, np.ndarray):
            raise ValueError("a .npy array, expected an .npz archive")
        with z:
            return {k: z[k] for k in z.files}
    except _READ_ERRORS as exc:
        raise _corrupt(f, f"not a readable .npz archive without pickle ({exc})") from None


def _model(
    path: Path, fitted: dict | None, model: str | Path | bytes | OnnxClassifier | None
) -> OnnxClassifier | None:
    """The artifact's model, or the given one after checking it is the model fitted on."""
    if model is not None:
        if not isinstance(model, OnnxClassifier):
            model = OnnxClassifier(model)
        if fitted is None or model.sha256 != fitted["sha256"]:
            raise ArtifactError(
                f"model sha256 {model.sha256[:12]}… differs from the model this artifact was "
                f"fitted on ({(fitted or {}).get('sha256', 'none')[:12]}…): refit with `guard fit`"
            )
        clf = model
    elif fitted is None:
        return None
    else:
        mfile = path / fitted["file"]
        data = mfile.read_bytes()  # hashed by the digest; parsed from these very bytes
        if hashlib.sha256(data).hexdigest() != fitted["sha256"]:
            raise ArtifactError(f"{mfile} was modified while loading: load it again")
        try:
            clf = OnnxClassifier(data)
        except (ModelError, InputError) as exc:
            raise _corrupt(mfile, f"not a usable model ({exc})") from None
    mpath = path / MANIFEST
    actual = {
        "input_name": clf.input_name,
        "input_shape": list(clf.input_shape),
        "logits": clf.logits_name,
        "features": clf.features_name,
    }
    for key, value in actual.items():
        if fitted[key] != value:
            raise _corrupt(mpath, f"model.{key} is {fitted[key]!r}, the model's is {value!r}")
    return clf


def _load(
    path: Path,
    model: str | Path | bytes | OnnxClassifier | None,
    *,
    progress: bool,
    device: str,
) -> tuple[dict[str, Any], Guard]:
    digests = _verify_digest(path)
    manifest = _read_manifest_file(path, digests)
    arrays = {name: _load_npy(path / f"{name}.npy") for name in manifest["arrays"]}
    ood = _load_npz(path / _OOD_FILE) if _OOD_FILE in manifest["files"] else None
    clf = _model(path, manifest["model"], model)
    state = GuardState(params=manifest["params"], fitted=manifest["fitted"], arrays=arrays, ood=ood)
    try:
        guard = Guard.from_state(state, clf, progress=progress, device=device)
    except GeometryError as exc:
        if "device" in str(exc):  # the caller's run-time choice, not the artifact's fault
            raise
        raise ArtifactError(f"{path} does not hold a valid guard ({exc}): refit it") from None
    except (GuardError, KeyError, TypeError, ValueError) as exc:
        raise ArtifactError(f"{path} does not hold a valid guard ({exc}): refit it") from None
    W, labels = guard.W_, guard.train_labels_
    described = {
        "n_classes": W.shape[0],
        "n_features": W.shape[1],
        "counts.n_train": len(guard.train_features_),
        "counts.n_labelled": 0 if labels is None else len(labels),
    }
    for key, value in described.items():
        head, _, tail = key.partition(".")
        stated = manifest[head][tail] if tail else manifest[head]
        if stated != value:
            raise _corrupt(path / MANIFEST, f"{key} is {stated!r}, the state's is {value!r}")
    return manifest, guard


def read_manifest(path: str | Path) -> dict[str, Any]:
    """The manifest of an artifact directory, after verifying the whole artifact exactly as
    :func:`load_artifact` does (on the CPU): what ``guard info`` prints."""
    return _load(Path(path), None, progress=False, device="cpu")[0]


def load_artifact(
    path: str | Path,
    model: str | Path | bytes | OnnxClassifier | None = None,
    *,
    progress: bool = False,
    device: str = "auto",
) -> Guard:
    """Load a fitted guard, verifying everything it reads (see the module docstring);
    ``model`` (optional) must be the very model it was fitted on. ``device``: where its scans
    run (:mod:`guard.geometry.accel`: auto, cpu or cuda).

    Raises:
        ArtifactError: (one line) the artifact is missing, corrupt, modified after fitting, of
            another schema, or ``model`` is not the model it was fitted on.
    """
    return _load(Path(path), model, progress=progress, device=device)[1]
