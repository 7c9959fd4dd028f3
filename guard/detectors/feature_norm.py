"""Feature norm: ``-||x||`` of the penultimate feature vector ``x`` (a small norm marks an
unfamiliar input: ReLU features of in-distribution inputs tend to be large). A weak score alone;
a candidate component of the combined score (:mod:`.combined`)."""

from __future__ import annotations

import numpy as np

from .base import Detector, Evidence

__all__ = ["FeatureNorm"]


class FeatureNorm(Detector):
    """``-||x||_2``; nothing to fit beyond the final layer's shape."""

    name = "feature_norm"
    needs = ("features",)

    def _score(self, ev: Evidence) -> np.ndarray:
        return -np.linalg.norm(self._read(ev, "features"), axis=1)
