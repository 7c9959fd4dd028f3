"""Maximum softmax probability (Hendrycks & Gimpel, ICLR 2017): the outlier score
``-max_c softmax(z / T)_c`` of the logits ``z``."""

from __future__ import annotations

import numpy as np
from scipy.special import softmax

from .base import Detector, Evidence

__all__ = ["MSP"]


class MSP(Detector):
    """``-max softmax(z / T)``; ``temperature`` T = 1 as in the paper (no ODIN scaling)."""

    name = "msp"
    needs = ("logits",)

    def __init__(self, temperature: float = 1.0) -> None:
        self.temperature = float(temperature)

    def _score(self, ev: Evidence) -> np.ndarray:
        Z = self._read(ev, "logits")
        return -softmax(Z / self.temperature, axis=1).max(axis=1)
