"""The L2-normalised feature space of the spherical hull (:mod:`guard.detectors.sphere`)."""

from __future__ import annotations

import numpy as np

__all__ = ["to_sphere"]


def to_sphere(features: np.ndarray) -> np.ndarray:
    """Rows of ``features`` (N, f) divided by their Euclidean norm, in float64. An all-zero row
    has no direction: it stays the zero vector, and its distance is that of the origin to the
    hull (the guard treats it like any other point; training and queries alike)."""
    F = np.asarray(features, dtype=np.float64)
    out = np.zeros_like(F)
    big = np.abs(F).max(axis=1) if F.shape[1] else np.zeros(F.shape[0])
    nz = big > 0
    Y = F[nz] / big[nz, None]  # scaled first: the squares of tiny rows do not underflow
    out[nz] = Y / np.sqrt(np.einsum("ij,ij->i", Y, Y))[:, None]
    return out
