"""Two-point equidistant projection: points of a high-dimensional space drawn in the plane so
that the distances to two chosen points ``a`` and ``b`` are exact (paper Fig. 9, Appendix A;
Close 1921).

With ``a`` at the origin and ``b`` at ``(D, 0)``, ``D = ||a - b||``, a point ``p`` at distances
``d_a`` and ``d_b`` goes to ``u = (d_a^2 - d_b^2 + D^2) / (2 D)``, ``v = sqrt(d_a^2 - u^2)``:
the intersection of the two circles (the triangle inequality makes it real; rounding is clipped).
The sign of ``v`` is not determined by two distances; it is taken positive, except that a
*path* (:func:`project_path`) keeps the side it is on and switches only where it touches the
axis, so a curve is drawn as one curve. A circle of radius ``r`` around ``a`` maps to a circle of
radius ``r`` around the origin (the ball ``B(x_phi)`` is drawn exactly).
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError

__all__ = ["project_path", "two_point_equidistant"]


def two_point_equidistant(points: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, 2) plane coordinates of ``points`` (N, d): distances to ``a`` and ``b`` exact."""
    P = np.atleast_2d(np.asarray(points, dtype=np.float64))
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    D = float(np.linalg.norm(a - b))
    if not D > 0:
        raise InputError("the two reference points of the projection coincide")
    da = np.linalg.norm(P - a, axis=1)
    db = np.linalg.norm(P - b, axis=1)
    u = (da**2 - db**2 + D**2) / (2 * D)
    v = np.sqrt(np.maximum(da**2 - u**2, 0.0))
    return np.stack([u, v], axis=1)


def project_path(points: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """:func:`two_point_equidistant` of a path (N, d), with ``v`` flipped to the side where
    consecutive points stay closest (the sign is free; a path should not zigzag across the
    axis)."""
    uv = two_point_equidistant(points, a, b)
    out = uv.copy()
    for k in range(1, len(uv)):
        prev = out[k - 1]
        up, down = uv[k], uv[k] * np.array([1.0, -1.0])
        out[k] = up if np.linalg.norm(up - prev) <= np.linalg.norm(down - prev) else down
    return out
