"""Spherical geometry of the feature space: the certified distance to the convex hull of the
L2-normalised training features (the hull of the training *directions*).

Deep nearest neighbours (Sun et al., ICML 2022) showed that normalising penultimate features
onto the unit sphere removes a nuisance: the feature norm grows with contrast and confidence
on in-distribution and out-of-distribution inputs alike, while the direction carries what the
network recognised. The paper's hull distance (eq. 20-25) in that space keeps its certificate:
the guard builds a second :class:`~guard.geometry.hull.ConvexHullIndex` on
``to_sphere(training features)`` and queries it with ``to_sphere(x)``; the same column generation
gives ``lower <= distance <= upper``. Every training direction is a vertex of that hull (unit
vectors are extreme points of the ball), so an in-distribution direction surrounded by training
directions is close to the hull's surface, and a direction away from all of them is far from it
(at most 1, for a direction orthogonal to every nonnegative training feature).

Only the distance moves to the sphere: margins, flip points and the union of learned regions stay
in the raw space where the classifier's decision regions live (with a bias ``b`` they are not
cones, so they have no meaning on the sphere).

:class:`SphereHullDistance` reads the guard's result (:class:`~.base.Evidence` ``sphere`` =
``Scores.sphere_upper``) and computes nothing itself.
"""

from __future__ import annotations

import numpy as np

from ..geometry.sphere import to_sphere
from .base import Detector, Evidence

__all__ = ["SphereHullDistance", "to_sphere"]


class SphereHullDistance(Detector):
    """The certified distance of the normalised feature vector to the hull of the normalised
    training features (its upper bound, ``Scores.sphere_upper``), as it is."""

    name = "sphere_hull"
    needs = ("sphere",)

    def _score(self, ev: Evidence) -> np.ndarray:
        return self._read(ev, "sphere").copy()
