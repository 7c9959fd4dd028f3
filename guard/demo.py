"""The built-in default: the committed Fashion-MNIST ResNet and its artifact on the 60k images."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .artifact import load_artifact, save_artifact
from .core import Guard
from .errors import ArtifactError

ASSETS = Path(__file__).parent / "assets"
DEFAULT_MODEL = ASSETS / "fmnist_resnet.onnx"


def default_guard(path: Path, *, progress: bool = True) -> Guard:
    """Load the default artifact at ``path``, fitting it first if missing or stale."""
    from .datasets import FASHION_MNIST_CLASSES, as_model_input, load_fashion_mnist
    from .model import OnnxClassifier

    model = OnnxClassifier(DEFAULT_MODEL)
    if (path / "manifest.json").is_file():
        try:
            return load_artifact(path, model, progress=progress)
        except ArtifactError as exc:
            print(f"existing artifact not usable ({exc}); refitting")
    print(f"fitting the default guard on the 60,000 Fashion-MNIST training images -> {path}")
    x, y = load_fashion_mnist("train")
    guard = Guard(progress=progress).fit(
        model, as_model_input(x), y, class_names=list(FASHION_MNIST_CLASSES)
    )
    save_artifact(guard, path, overwrite=True)
    return load_artifact(path, model, progress=progress)


def run_demo(path: Path, *, n_test: int = 1000, progress: bool = True) -> int:
    """Score Fashion-MNIST test images with the default guard and print what it found."""
    from .cli import summary_line
    from .datasets import as_model_input, load_fashion_mnist

    guard = default_guard(path, progress=progress)
    x, y = load_fashion_mnist("test")
    x, y = x[:n_test], y[:n_test]
    s = guard.score(as_model_input(x))
    names = guard.class_names_
    print(f"\nFashion-MNIST test images 0..{len(x) - 1} (first 12 shown)")
    print(f"{'#':>4} {'label':<12} {'pred':<12} {'d_min':>7} {'nearest':<12} "
          f"{'hull [lo, up]':>17} {'ambig.':>7} {'union':>5}")
    for i in range(min(12, len(x))):
        print(f"{i:>4} {names[y[i]]:<12} {names[s.pred[i]]:<12} {s.d_min[i]:7.3f} "
              f"{names[s.nearest_class[i]]:<12} [{s.hull_lower[i]:6.3f}, {s.hull_upper[i]:6.3f}] "
              f"{s.ambiguity[i]:7.3f} {'yes' if s.in_union[i] else 'no':>5}")
    print()
    print(f"accuracy {100 * np.mean(s.pred == y):.1f}%; " + summary_line(s))
    amb = s.ambiguity < 0
    if amb.any() and (~amb).any():
        print(f"error rate where the hull is farther than the boundary (ambiguous): "
              f"{100 * np.mean(s.pred[amb] != y[amb]):.1f}% vs {100 * np.mean(s.pred[~amb] != y[~amb]):.1f}% "
              f"elsewhere")
    print(f"Lipschitz constant of the final layer sigma_max(W) = {guard.lipschitz_:.3f}")
    return 0
