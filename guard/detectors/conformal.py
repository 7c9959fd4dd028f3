"""Split conformal calibration of outlier scores: thresholds for a target false rate and
p-values (Vovk et al. 2005; Angelopoulos & Bates 2021, sec. 1.1).

With n calibration scores exchangeable with a new in-distribution score ``s``, ``s`` exceeds the
``ceil((n + 1)(1 - a))``-th smallest of them with probability at most ``a``; the same argument on
the low tail gives a lower threshold. Equivalently the p-value
``p(s) = (1 + #{calibration scores >= s}) / (n + 1)`` satisfies ``P(p <= a) <= a`` for every
``a``, and exceeds ``a - 1/(n + 1)`` for continuous scores.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import InputError

__all__ = ["check_rate", "lower_threshold", "p_value", "upper_threshold"]


def check_rate(rate: float, name: str, n: int) -> None:
    """InputError unless ``0 < rate < 1`` and ``n`` calibration samples can reach it."""
    if not 0 < rate < 1:
        raise InputError(f"{name} must be in (0, 1), got {rate}")
    need = math.ceil(1 / rate) - 1
    if n < need:
        raise InputError(
            f"{name}={rate} needs at least {need} calibration samples, got {n}: use a larger "
            f"calibration split, a larger rate, or calib_fraction=0 (--calib-fraction 0) to fit "
            f"without calibrated thresholds"
        )


def upper_threshold(scores: np.ndarray, rate: float) -> float:
    """Smallest t with P(new in-distribution score > t) <= rate, from calibration scores (n,)."""
    s = np.sort(np.asarray(scores, dtype=np.float64))
    check_rate(rate, "rate", len(s))
    k = math.ceil((len(s) + 1) * (1 - rate))
    return float(s[k - 1]) if k <= len(s) else math.inf


def lower_threshold(scores: np.ndarray, rate: float) -> float:
    """Largest t with P(new in-distribution score < t) <= rate, from calibration scores (n,)."""
    s = np.sort(np.asarray(scores, dtype=np.float64))
    check_rate(rate, "rate", len(s))
    k = math.floor((len(s) + 1) * rate)
    return float(s[k - 1]) if k >= 1 else -math.inf


def p_value(scores: np.ndarray, calib_sorted: np.ndarray) -> np.ndarray:
    """Conformal p-values (N,) of outlier scores (N,) against ascending calibration scores (n,):
    ``(1 + #{calib >= s}) / (n + 1)``, in ``[1/(n+1), 1]``."""
    c = np.asarray(calib_sorted, dtype=np.float64)
    if c.ndim != 1 or c.size == 0:
        raise InputError(f"expected non-empty sorted calibration scores (n,), got {c.shape}")
    ge = c.size - np.searchsorted(c, np.asarray(scores, dtype=np.float64), side="left")
    return (1.0 + ge) / (c.size + 1.0)
