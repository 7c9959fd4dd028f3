"""The built-in default: the committed Fashion-MNIST ResNet and its artifact on the 60k images."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from .artifact import load_artifact, save_artifact
from .errors import ArtifactError
from .estimator import Guard

ASSETS = Path(__file__).parent / "assets"
DEFAULT_MODEL = ASSETS / "fmnist_resnet.onnx"

log = logging.getLogger(__name__)


def default_guard(path: Path, *, progress: bool = True, device: str = "auto") -> Guard:
    """Load the default artifact at ``path``, fitting it first if missing or stale."""
    from .datasets import FASHION_MNIST_CLASSES, as_model_input, load_fashion_mnist
    from .model import OnnxClassifier

    model = OnnxClassifier(DEFAULT_MODEL)
    if (path / "manifest.json").is_file():
        other = _fitted_model_sha256(path)
        if other is not None and other != model.sha256:
            raise ArtifactError(
                f"{path} holds a guard of another model (sha256 {other[:12]}…, the default "
                f"model's is {model.sha256[:12]}…): not refitting over it; give the default "
                f"guard another path, or load this one with `load_artifact({str(path)!r})`"
            )
        try:
            return load_artifact(path, model, progress=progress, device=device)
        except ArtifactError as exc:
            log.warning("existing artifact not usable (%s); refitting", exc)
    log.warning(
        "fitting the default guard on the 60,000 Fashion-MNIST training images -> %s "
        "(first run only)",
        path,
    )
    x, y = load_fashion_mnist("train")
    guard = Guard(progress=progress).fit(
        model, as_model_input(x), y, class_names=list(FASHION_MNIST_CLASSES)
    )
    save_artifact(guard, path, overwrite=True)
    return load_artifact(path, model, progress=progress, device=device)


def _fitted_model_sha256(path: Path) -> str | None:
    """The sha256 of the model the artifact at ``path`` names in its manifest, or None when
    the manifest cannot tell (unreadable, or no model): then it is only stale or broken."""
    try:
        fitted = json.loads((path / "manifest.json").read_text()).get("model")
        sha = fitted.get("sha256") if isinstance(fitted, dict) else None
    except (OSError, ValueError, AttributeError):
        return None
    return sha if isinstance(sha, str) else None
