"""Guard: feature-space geometry of image classifiers — exact margins, certified distance to the
training hull, ambiguity and the union of learned regions. No gRPC here; see ``server/``."""

from __future__ import annotations

__version__ = "0.1.0"

from .artifact import load_artifact, save_artifact  # noqa: E402
from .core import Guard, Scores  # noqa: E402
from .errors import (  # noqa: E402
    ArtifactError,
    DataError,
    GuardError,
    InputError,
    ModelError,
    NotFittedError,
)
from .model import OnnxClassifier  # noqa: E402

__all__ = [
    "ArtifactError", "DataError", "Guard", "GuardError", "InputError", "ModelError",
    "NotFittedError", "OnnxClassifier", "Scores", "load_artifact", "save_artifact", "__version__",
]
