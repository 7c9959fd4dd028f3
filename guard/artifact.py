"""Versioned artifact directory of a fitted :class:`~guard.estimator.Guard`. No pickle anywhere.

Layout::

    manifest.json        schema version, package version, model sha256, shapes, settings, counts
    model.onnx           the classifier the guard was fitted on (absent for feature-only guards)
    W.npy, b.npy         final affine layer
    train_features.npy   (N, f) float32
    radii.npy            (N,) d_min of each training point (union of learned regions)
    train_index.npy      (N,) index of each hull point in the data given to fit
    calib_*.npy          held-out calibration scores (hull distance, d_min, ambiguity)
    ood.npz              the fitted combined OOD score (guard.ood.OODScorer), arrays only
    train_pred.npy       (N,) predicted classes;  train_labels.npy (N,) if labels were given
    index.faiss          FAISS index over the training features

The directory is written under a temporary name and renamed at the end, so a crash never leaves a
half-written artifact behind. Loading is strict: another schema, a missing or altered file, or a
model whose sha256 differs from the one fitted is refused.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import shutil
import tempfile
from pathlib import Path

import faiss
import numpy as np

from .version import __version__
from .calibrate import Thresholds
from .estimator import Guard
from .errors import ArtifactError
from .geometry.hull import ConvexHullIndex
from .model import OnnxClassifier

SCHEMA_VERSION = 1
_ARRAYS = ("W", "b", "train_features", "radii", "train_pred", "train_labels", "train_index",
           "calib_hull", "calib_d_min", "calib_ambiguity")
_MANIFEST_KEYS = ("files", "model", "class_names", "nonneg", "nonneg_detected", "lipschitz",
                  "settings", "thresholds")


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def save_artifact(guard: Guard, out: str | Path, *, overwrite: bool = False) -> Path:
    """Write a fitted guard to directory ``out`` (atomically) and return its path."""
    guard._fitted()
    out = Path(out)
    if out.exists() and not overwrite:
        raise ArtifactError(f"{out} already exists (pass overwrite=True / --overwrite to replace)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        arrays = {
            "W": guard.W_, "b": guard.b_, "train_features": guard.train_features_,
            "radii": guard.radii_, "train_pred": guard.train_pred_,
            "train_labels": guard.train_labels_, "train_index": guard.train_index_,
        }
        for key, arr in (guard.calib_scores_ or {}).items():
            arrays[f"calib_{key}"] = arr
        files = {}
        for name, arr in arrays.items():
            if arr is not None:
                np.save(tmp / f"{name}.npy", np.asarray(arr), allow_pickle=False)
                files[f"{name}.npy"] = _sha256_file(tmp / f"{name}.npy")
        if getattr(guard, "ood_", None) is not None:
            np.savez(tmp / "ood.npz", **guard.ood_.to_arrays())
            files["ood.npz"] = _sha256_file(tmp / "ood.npz")
        faiss.write_index(guard.hull_.index, str(tmp / "index.faiss"))
        files["index.faiss"] = _sha256_file(tmp / "index.faiss")
        model = getattr(guard, "model_", None)
        if model is not None:
            (tmp / "model.onnx").write_bytes(model.data)
        manifest = {
            "schema_version": SCHEMA_VERSION,
            "guard_version": __version__,
            "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "model": None if model is None else {
                "file": "model.onnx", "sha256": model.sha256, "input_name": model.input_name,
                "input_shape": list(model.input_shape), "logits": model.logits_name,
                "features": model.features_name,
                "affine_error": getattr(guard, "affine_error_", None),
            },
            "n_features": int(guard.W_.shape[1]),
            "n_classes": int(guard.W_.shape[0]),
            "class_names": guard.class_names_,
            "nonneg": guard.nonneg_,
            "nonneg_detected": guard.nonneg is None,
            "lipschitz": guard.lipschitz_,
            "thresholds": guard.thresholds_.to_dict(),
            "settings": {
                "hull_k": guard.hull_k, "hull_tol": guard.hull_tol,
                "hull_max_rounds": guard.hull_max_rounds, "top_support": guard.top_support,
                "batch_size": guard.batch_size, "calib_fraction": guard.calib_fraction,
                "target_abstain_rate": guard.target_abstain_rate,
                "target_flag_rate": guard.target_flag_rate, "seed": guard.seed,
            },
            "counts": {
                "n_train": int(guard.train_features_.shape[0]),
                "n_labelled": 0 if guard.train_labels_ is None else int(len(guard.train_labels_)),
                "n_in_union_radius_positive": int((guard.radii_ > 0).sum()),
            },
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


def read_manifest(path: str | Path) -> dict:
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
    fitted = manifest["model"]
    if model is not None and not isinstance(model, OnnxClassifier):
        model = OnnxClassifier(model)
    if model is not None:
        if fitted is None or model.sha256 != fitted["sha256"]:
            raise ArtifactError(
                f"model sha256 {model.sha256[:12]}… differs from the model this artifact was "
                f"fitted on ({(fitted or {}).get('sha256', 'none')[:12]}…): refit with `guard fit`"
            )
    elif fitted is not None:
        mfile = path / fitted["file"]
        if not mfile.is_file():
            raise ArtifactError(f"{mfile} is missing")
        # Hash before parsing: a corrupted file must be refused as modified, not fail to parse.
        if _sha256_file(mfile) != fitted["sha256"]:
            raise ArtifactError(f"{mfile} was modified after fitting (sha256 differs): refit")
        model = OnnxClassifier(mfile)
    arrays = {}
    for name in (n for n in _ARRAYS if n != "train_features"):
        f = path / f"{name}.npy"
        arrays[name] = np.load(f, allow_pickle=False) if f.is_file() else None
    s = manifest["settings"]
    guard = Guard(
        nonneg=manifest["nonneg"] if not manifest["nonneg_detected"] else None,
        hull_k=s["hull_k"], hull_tol=s["hull_tol"], hull_max_rounds=s["hull_max_rounds"],
        top_support=s["top_support"], batch_size=s["batch_size"], progress=progress,
        calib_fraction=s["calib_fraction"], target_abstain_rate=s["target_abstain_rate"],
        target_flag_rate=s["target_flag_rate"], seed=s["seed"],
        ambiguity_threshold=manifest["thresholds"]["ambiguity"],
    )
    guard.W_, guard.b_ = arrays["W"], arrays["b"]
    guard.nonneg_ = bool(manifest["nonneg"])
    guard.class_names_ = list(manifest["class_names"])
    guard.radii_, guard.train_pred_ = arrays["radii"], arrays["train_pred"]
    guard.train_labels_ = arrays["train_labels"]
    guard.train_index_ = arrays["train_index"]
    guard.thresholds_ = Thresholds.from_dict(manifest["thresholds"])
    guard.ood_ = None
    if (path / "ood.npz").is_file():
        from .ood import OODScorer

        with np.load(path / "ood.npz", allow_pickle=False) as z:
            guard.ood_ = OODScorer.from_arrays({k: z[k] for k in z.files})
    guard.calib_scores_ = None
    if arrays["calib_hull"] is not None:
        guard.calib_scores_ = {k: arrays[f"calib_{k}"] for k in ("hull", "d_min", "ambiguity")}
    guard.lipschitz_ = float(manifest["lipschitz"])
    guard.model_ = model
    if fitted is not None:
        guard.affine_error_ = fitted.get("affine_error")
    index = faiss.read_index(str(path / "index.faiss"))
    if index.ntotal != len(arrays["radii"]) or index.d != guard.W_.shape[1]:
        raise ArtifactError(f"{path / 'index.faiss'} holds {index.ntotal} x {index.d} features; "
                            f"expected {len(arrays['radii'])} x {guard.W_.shape[1]}: refit")
    # The features are held once, by the index; train_features.npy stays for readers.
    guard.device = device
    guard.hull_ = ConvexHullIndex(
        None, k=guard.hull_k, tol=guard.hull_tol, max_rounds=guard.hull_max_rounds, index=index,
        device=device,
    )
    guard.manifest_ = manifest
    return guard
