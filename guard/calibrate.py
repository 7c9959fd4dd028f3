"""Held-out in-distribution scores -> thresholds for a target false rate (split conformal; the
thresholds themselves are :mod:`guard.detectors.conformal`).

With n exchangeable calibration scores, rejecting a new in-distribution score above the
``ceil((n + 1)(1 - a))``-th smallest calibration score happens with probability at most ``a``
(Vovk et al.; Angelopoulos & Bates 2021, sec. 1.1). The same argument on the low tail gives the
adversarial-flag threshold on ``d_min``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from .detectors.conformal import check_rate, lower_threshold, upper_threshold
from .errors import InputError


@dataclass(frozen=True)
class Thresholds:
    """Decision thresholds and how they were obtained.

    Attributes:
        ambiguity: abstain when ``d_min - d_hull`` is below this (paper: 0).
        hull: abstain when the hull distance (upper bound) exceeds this.
        d_min: flag "adversarial" when the margin is below this.
        target_abstain_rate: false-abstain rate the ``hull`` threshold was calibrated for.
        target_flag_rate: false-flag rate the ``d_min`` threshold was calibrated for.
        n_calib: calibration samples used (0: not calibrated; hull = inf, d_min = 0).
    """

    ambiguity: float = 0.0
    hull: float = math.inf
    d_min: float = 0.0
    target_abstain_rate: float | None = None
    target_flag_rate: float | None = None
    n_calib: int = 0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["hull"] = None if math.isinf(self.hull) else self.hull  # JSON has no inf
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Thresholds:
        d = dict(d)
        d["hull"] = math.inf if d.get("hull") is None else float(d["hull"])
        return cls(**d)


def calibrate(
    hull_distance: np.ndarray,
    d_min: np.ndarray,
    *,
    abstain_rate: float = 0.05,
    flag_rate: float = 0.01,
    ambiguity: float = 0.0,
) -> Thresholds:
    """Thresholds from held-out in-distribution hull distances and margins (N,) each."""
    n = len(hull_distance)
    if n == 0 or len(d_min) != n:
        raise InputError(f"expected equal, non-empty calibration arrays, got {n} and {len(d_min)}")
    check_rate(abstain_rate, "target abstain rate", n)
    check_rate(flag_rate, "target flag rate", n)
    return Thresholds(
        ambiguity=float(ambiguity),
        hull=upper_threshold(hull_distance, abstain_rate),
        d_min=max(lower_threshold(d_min, flag_rate), 0.0),
        target_abstain_rate=float(abstain_rate),
        target_flag_rate=float(flag_rate),
        n_calib=int(n),
    )
