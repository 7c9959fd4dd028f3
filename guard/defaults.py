"""The built-in default: the committed Fashion-MNIST ResNet and its artifact on the 60k images."""

from __future__ import annotations

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
