"""Monotone map of one detector's scores to a standard-normal scale, fitted on in-distribution
calibration scores: the common scale on which :mod:`.combined` weighs its components.

Midrank ECDF of the calibration scores, ``Phi^-1``, piecewise linear between at most 257
quantile knots. Beyond the largest knot the map continues linearly with the slope of the upper
tail (90th-99th percentile), so far-away inputs keep being ranked by how far away they are;
below the smallest knot it is constant (being more typical than every calibration input in one
component buys nothing).
"""

from __future__ import annotations

import numpy as np
from scipy.special import ndtri

__all__ = ["NormalTransform"]

MAX_KNOTS = 257


class NormalTransform:
    """``t(s)``: knots ``x`` (k,) ascending with normal scores ``z`` (k,), upper-tail ``slope``."""

    def __init__(self, x: np.ndarray, z: np.ndarray, slope: float) -> None:
        self.x, self.z, self.slope = x, z, float(slope)

    @classmethod
    def fit(cls, values: np.ndarray) -> NormalTransform:
        """Fit on calibration scores (m,), m >= 1."""
        v = np.sort(np.asarray(values, dtype=np.float64))
        n = v.size
        k = min(n, MAX_KNOTS)
        u = np.unique(v[np.round(np.linspace(0, n - 1, k)).astype(np.int64)])
        lo = np.searchsorted(v, u, side="left")
        hi = np.searchsorted(v, u, side="right")
        p = np.clip((lo + hi) / (2.0 * n), 0.5 / n, 1 - 0.5 / n)  # midrank ECDF
        z = ndtri(p)
        q90, q99 = np.quantile(v, [0.9, 0.99])
        if q99 > q90:
            slope = (ndtri(0.99) - ndtri(0.9)) / (q99 - q90)
        elif u[-1] > u[0]:
            slope = (z[-1] - z[0]) / (u[-1] - u[0])
        else:  # constant on the calibration data: anything above it is very unusual
            slope = 1e6 / max(abs(float(u[-1])), 1.0)
        return cls(u, z, slope)

    def __call__(self, s: np.ndarray) -> np.ndarray:
        """Normal scores (N,) of scores (N,)."""
        t = np.interp(s, self.x, self.z)  # constant outside the knots, linear above the top one
        t += self.slope * np.maximum(s - self.x[-1], 0.0)
        return t
