"""Float rounding helpers shared by the certified scans (hull, PCA bound)."""

from __future__ import annotations

import numpy as np

U32 = 2.0**-24  # unit roundoff of float32
U64 = 2.0**-53  # unit roundoff of float64


def blocks(a: np.ndarray, rows: int | None = None):
    """Row blocks of ``a`` as float64 (bounded temporary memory: ~4 MB per block)."""
    rows = rows or max(256, (1 << 19) // max(a.shape[1], 1))
    for lo in range(0, a.shape[0], rows):
        yield a[lo : lo + rows].astype(np.float64)


def round_up32(x: np.ndarray) -> np.ndarray:
    """float32 values ``>= x`` (float64 input), each the nearest such float32."""
    y = x.astype(np.float32)
    low = y.astype(np.float64) < x
    y[low] = np.nextafter(y[low], np.float32(np.inf))
    return y


def down32(x: float) -> np.float32:
    """The largest float32 ``<= x``."""
    y = np.float32(x)
    return np.nextafter(y, np.float32(-np.inf)) if float(y) > x else y
