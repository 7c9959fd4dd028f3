"""Guard: feature-space geometry of image classifiers — exact margins, certified distance to the
training hull, ambiguity and the union of learned regions, and the decisions built on them.
No transport here; see ``server/``.

Layers (arrows point down only): :mod:`guard.geometry` (pure numerics) ←
:mod:`guard.detectors` (OOD scores, conformal p-values) ← :mod:`guard.estimator` (``Guard``)
← :mod:`guard.artifact` (files) ← :mod:`guard.evaluation` and :mod:`guard.cli`.
"""

from __future__ import annotations

from .artifact import load_artifact, save_artifact
from .errors import (
    ArtifactError,
    DataError,
    GuardError,
    InputError,
    ModelError,
    NotFittedError,
)
from .estimator import Guard
from .geometry.errors import GeometryError
from .model import OnnxClassifier
from .types import Decisions, Scores
from .version import __version__

__all__ = [
    "ArtifactError",
    "DataError",
    "Decisions",
    "GeometryError",
    "Guard",
    "GuardError",
    "InputError",
    "ModelError",
    "NotFittedError",
    "OnnxClassifier",
    "Scores",
    "__version__",
    "load_artifact",
    "save_artifact",
]
