"""Out-of-distribution detectors on the penultimate features: the guard's peers in evaluations AND
the components of its combined score, one implementation each, behind one API::

    det = make("knn").fit(train_features, train_labels, W, b)
    s = det.score(features, logits)                  # (N,) float64, HIGHER = more OOD
    s = det.score(Evidence.from_scores(guard.score_features(x), x))

=================  =========================================================================
name               score (higher = more OOD); peer defaults
=================  =========================================================================
``msp``            ``-max softmax(z)`` (Hendrycks & Gimpel 2017)
``energy``         ``-logsumexp(z)`` (Liu et al. 2020)
``mahalanobis``    ``min_c (x - mu_c)^T S^+ (x - mu_c)``, shared covariance (Lee et al. 2018)
``knn``            distance to the 50th nearest normalised training feature (Sun et al. 2022)
``vim``            ``alpha ||P_res (x - u)|| - logsumexp(z)``, ``u = -W^+ b`` (Wang et al. 2022)
``fdbd``           ``-mean_{j != i} |z_i - z_j| / ||w_i - w_j|| / ||x - mean||`` (Liu & Qin 2024)
``ambiguity``      ``d_hull - d_min``: the paper's raw ambiguity (eq. 26) negated
``hull``           the certified distance to the training hull (eq. 20-25), upper bound
``sphere_hull``    the same on the L2-normalised features and training features (:mod:`.sphere`)
``hw_sphere_hull`` the same on half-whitened normalised features, ``to_sphere(x S_w^{-1/4})``
                   (``hw_metric_sphere_hull``: the classifier's directions in the metric too)
``low_tail``       sum of the 3 largest per-unit lower-tail surprisals (:mod:`.whitened`)
=================  =========================================================================

``ambiguity``, ``hull`` and ``sphere_hull`` read the guard's geometry from :class:`Evidence`;
``feature_norm`` (``-||x||``) is a component of the combined score only.
:class:`CombinedScore` (:mod:`.combined`) combines detectors on held-out in-distribution data
into one score with a split-conformal p-value (:mod:`.conformal`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..errors import InputError
from .base import Detector, Evidence
from .combined import (
    COMBINE,
    COMPONENTS,
    DEFAULT_COMPONENTS,
    MIN_CALIB,
    CombinedScore,
    component,
)
from .conformal import lower_threshold, p_value, upper_threshold
from .energy import Energy
from .fdbd import FDBD
from .feature_norm import FeatureNorm
from .geometric import Ambiguity, HullDistance
from .knn import KNN
from .mahalanobis import Mahalanobis
from .msp import MSP
from .sphere import SphereHullDistance, to_sphere
from .vim import ViM
from .whitened import LowTail, WhitenedMetricSphereHull, WhitenedSphereHull

__all__ = [
    "COMBINE",
    "COMPONENTS",
    "DEFAULT_COMPONENTS",
    "FDBD",
    "KNN",
    "MIN_CALIB",
    "MSP",
    "REGISTRY",
    "Ambiguity",
    "CombinedScore",
    "Detector",
    "Energy",
    "Evidence",
    "FeatureNorm",
    "HullDistance",
    "LowTail",
    "Mahalanobis",
    "SphereHullDistance",
    "ViM",
    "WhitenedMetricSphereHull",
    "WhitenedSphereHull",
    "component",
    "lower_threshold",
    "make",
    "p_value",
    "to_sphere",
    "upper_threshold",
]

#: Peer name -> factory of the detector with the published method's defaults.
REGISTRY: dict[str, Callable[..., Detector]] = {
    cls.name: cls
    for cls in (
        MSP,
        Energy,
        Mahalanobis,
        KNN,
        ViM,
        FDBD,
        Ambiguity,
        HullDistance,
        SphereHullDistance,
        WhitenedSphereHull,
        WhitenedMetricSphereHull,
        LowTail,
    )
}


def make(name: str, **kwargs: Any) -> Detector:
    """A peer by registry name, its defaults overridden by ``kwargs``: ``make("knn", k=10)``."""
    try:
        factory = REGISTRY[name]
    except KeyError:
        raise InputError(f"unknown detector {name!r}; choose from {sorted(REGISTRY)}") from None
    return factory(**kwargs)
