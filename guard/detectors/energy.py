"""Energy score (Liu et al., NeurIPS 2020): ``E(x) = -T logsumexp(z / T)`` of the logits ``z``,
an outlier score as it stands (low energy = in-distribution)."""

from __future__ import annotations

import numpy as np

from .base import Detector, Evidence
from .lse import logsumexp

__all__ = ["Energy"]


class Energy(Detector):
    """``-T logsumexp(z / T)``; ``temperature`` T = 1 as in the paper."""

    name = "energy"
    needs = ("logits",)

    def __init__(self, temperature: float = 1.0) -> None:
        self.temperature = float(temperature)

    def _score(self, ev: Evidence) -> np.ndarray:
        T = self.temperature
        return -T * logsumexp(self._read(ev, "logits") / T)
