"""``log(sum(exp(a), axis=1))``, stable, in numpy alone.

``scipy.special.logsumexp`` spends about 0.2 ms a call on array-API dispatch: at one image per
call that was half of the default abstention score's cost (energy, ViM and the combination each
call it). Same arithmetic (the row maximum subtracted, the result in the input's dtype).
"""

from __future__ import annotations

import numpy as np


def logsumexp(a: np.ndarray) -> np.ndarray:
    """``log(sum(exp(a), axis=1))`` of a (N, k) float array, without overflow."""
    a = np.asarray(a)
    m = a.max(axis=1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0).astype(a.dtype, copy=False)
    with np.errstate(divide="ignore"):  # a row of -inf: log(0) = -inf, as it should be
        return np.log(np.exp(a - m).sum(axis=1)) + m[:, 0]
