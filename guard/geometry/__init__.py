"""Pure numerics of the feature space (paper sections 3-6); imports nothing else of the project.

* :mod:`.margins` (+ :mod:`.orthant`, :mod:`.qp`): exact distance to every decision boundary,
  eq. 7-12, with a certificate.
* :mod:`.hull` (+ :mod:`.hull_pca`): certified distance to the convex hull of the training
  features, eq. 20-25.
* :mod:`.regions`: the union of learned regions (balls of guaranteed classification).
* :mod:`.qp`: every small exact QP (margin pairs, minimum-norm point of a hull).
* :mod:`.floats` (rounding bounds), :mod:`.accel` (the scans' matrix products, CPU or GPU),
  :mod:`.progress` (progress bars), :mod:`.errors` (:class:`GeometryError`).
"""

from __future__ import annotations

from .errors import GeometryError
from .hull import ConvexHullIndex, HullConfig, HullDistances
from .margins import Margins, compute_margins, lipschitz_constant, relaxed_margins
from .qp import min_norm_point, min_norm_point_warm
from .regions import Regions, UnionOfBalls

__all__ = [
    "ConvexHullIndex",
    "GeometryError",
    "HullConfig",
    "HullDistances",
    "Margins",
    "Regions",
    "UnionOfBalls",
    "compute_margins",
    "lipschitz_constant",
    "min_norm_point",
    "min_norm_point_warm",
    "relaxed_margins",
]
