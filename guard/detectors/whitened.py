"""The certified hull distance in a half-whitened spherical space, and a low-activation score:
the components the multi-model OOD suite (``scripts/eval_ood_suite.py``) chose the default on.

**Half-whitened spherical hull** (``hw_sphere_hull``). The spherical hull (:mod:`.sphere`)
measures the direction of a feature vector against the hull of the training directions. Its
weak spots on the suite were inputs that move along directions in which the classes barely vary
(where a raw direction change is small but unusual). Whitening the features by the pooled
within-class covariance ``S_w`` before normalising makes those directions count (full whitening
is the space of Mahalanobis); half of it, ``A = S_w^{-1/4}``, keeps the between-class geometry
that the spherical hull uses. The score is the certified hull distance (its upper bound, the
same column generation as every hull of the guard) of ``to_sphere(x A)`` to the hull of
``to_sphere(t A)`` over the training features ``t``.

``hw_metric_sphere_hull`` adds the classifier's own directions to the metric:
``A' = A (I + W_n^T W_n)^{1/2}`` with ``W_n = W / ||W||_2``, so that a move that changes the
logits counts twice as much as one the classifier ignores.

**Low-activation tail** (``low_tail``). A constant or blank image drives units of the last hidden
layer below anything seen in training (after a ReLU: to exact zeros where training inputs were
positive). Per unit ``j`` the lower-tail surprisal ``-log (#{t: t_j <= x_j} + 1) / (N + 2)``
against the training features, and the score is the sum of the ``k = 3`` largest: high only where
a few units sit in their extreme lower tail, which hull distances (dominated by the large
coordinates) miss.

The three keep a copy of what they need of the training features (the transformed directions'
hull, :class:`~guard.geometry.hull_view.HullView`; the sorted columns) that is rebuilt from the
guard's training features when a guard is loaded (:meth:`bind`), so an artifact stores only the
transform. A guard computes the two hull distances in the passes it makes over its training
features anyway (:meth:`~guard.geometry.hull_pair.HullPair.query_all`) and hands them over as
``Evidence.hulls``; alone, each detector queries its own view.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from ..geometry.hull_types import HullConfig
from ..geometry.hull_view import HullView
from .base import Detector, Evidence
from .mahalanobis import within_class_covariance

__all__ = ["LowTail", "WhitenedMetricSphereHull", "WhitenedSphereHull"]


class WhitenedSphereHull(Detector):
    """Certified hull distance of ``to_sphere(x A)`` to the hull of the transformed training
    features, ``A = S_w^{-gamma/2}`` (module docstring).

    Args:
        gamma: how far to whiten (0: the plain spherical hull, 1: Mahalanobis' whitening).
        metric: weight of the classifier's directions in the metric ``I + metric W_n^T W_n``.
        tol: relative gap at which the hull query stops. The score is the upper bound (the
            distance to a point of the hull, whatever the gap); at 1e-2 instead of the guard's
            1e-3 every AUROC of the OOD suite stayed the same to four decimals, and the score
            cost 1.60 instead of 1.96 ms per image (``bench/ood.py``, two runs).
    """

    name = "hw_sphere_hull"
    needs = ("features",)
    state = ("transform_",)
    default_metric = 0.0

    def __init__(self, gamma: float = 0.5, metric: float | None = None, tol: float = 1e-2) -> None:
        self.gamma = float(gamma)
        self.metric = float(self.default_metric if metric is None else metric)
        self.tol = float(tol)
        if not 0 <= self.gamma <= 1 or self.metric < 0 or not 0 < self.tol < 1:
            raise InputError(
                f"expected 0 <= gamma <= 1, metric >= 0 and 0 < tol < 1, got {self.gamma}, "
                f"{self.metric}, {self.tol}"
            )

    def _fit(self, F: np.ndarray, y: np.ndarray | None) -> None:
        f = F.shape[1]
        _, S = within_class_covariance(F, self._labels(F, y))
        vals, vecs = np.linalg.eigh(S)
        vals = np.maximum(vals, max(float(vals.max()), 1e-300) * 1e-12)
        A = (vecs * vals ** (-self.gamma / 2)) @ vecs.T
        if self.metric > 0:
            Wn = self.W_ / max(float(np.linalg.norm(self.W_, 2)), 1e-300)
            e, V = np.linalg.eigh(np.eye(f) + self.metric * Wn.T @ Wn)
            A = A @ ((V * np.sqrt(e)) @ V.T)
        self.transform_ = A
        self.bind(F)

    def bind(self, train_features: np.ndarray) -> None:
        """Build the hull of the transformed training features (after :meth:`fit`, or after
        :meth:`from_arrays` with the guard's training features). Given float32 features the
        view keeps a reference to them (:attr:`hull_view`): a guard passes its hull's own
        points, so that the view's full rounds ride on the guard's passes."""
        F = np.asarray(train_features)
        if F.ndim != 2 or F.shape[1] != self.transform_.shape[0]:
            raise InputError(
                f"expected training features (N, {self.transform_.shape[0]}), got {F.shape}"
            )
        if F.dtype != np.float32 or not F.flags.c_contiguous:
            F = np.ascontiguousarray(F, dtype=np.float32)
        self._view = HullView(F, self.transform_, HullConfig(tol=self.tol), device="cpu")

    def _score(self, ev: Evidence) -> np.ndarray:
        if ev.hulls is not None and self.name in ev.hulls:
            return ev.hulls[self.name]
        X = self._read(ev, "features")
        if not len(X):
            return np.zeros(0)
        return self.hull_view.query(X).upper

    @property
    def hull_view(self) -> HullView:
        """The hull of the transformed training features' directions (after :meth:`bind`)."""
        if not hasattr(self, "_view"):
            raise InputError(f"{type(self).__name__} has no index: bind(training features)")
        return self._view


class WhitenedMetricSphereHull(WhitenedSphereHull):
    """:class:`WhitenedSphereHull` with the classifier's directions in the metric
    (``metric = 1``)."""

    name = "hw_metric_sphere_hull"
    default_metric = 1.0


class LowTail(Detector):
    """Sum of the ``k`` largest per-unit lower-tail surprisals against the training features
    (module docstring)."""

    name = "low_tail"
    needs = ("features",)

    def __init__(self, k: int = 3) -> None:
        self.k = int(k)
        if self.k < 1:
            raise InputError(f"expected k >= 1, got {self.k}")

    def _fit(self, F: np.ndarray, y: np.ndarray | None) -> None:
        if self.k > F.shape[1]:
            raise InputError(f"low_tail needs k <= the feature width {F.shape[1]}, got {self.k}")
        self.bind(F)

    def bind(self, train_features: np.ndarray) -> None:
        """Sort the training features' columns (after :meth:`fit`, or after
        :meth:`from_arrays` with the guard's training features)."""
        F = np.asarray(train_features, dtype=np.float32)
        if F.ndim != 2 or F.shape[1] != self.W_.shape[1]:
            raise InputError(f"expected training features (N, {self.W_.shape[1]}), got {F.shape}")
        # (f, N): each unit's values, ascending, each row contiguous (np.sort of F.T keeps its
        # column-major layout: a row's binary search then touched a cache line per probe, 4.8x
        # slower at batch 64)
        self._sorted = np.sort(np.ascontiguousarray(F.T), axis=1)

    def _score(self, ev: Evidence) -> np.ndarray:
        if not hasattr(self, "_sorted"):
            raise InputError("LowTail has no training columns: bind(training features)")
        X = self._read(ev, "features").astype(np.float32)
        f, N = self._sorted.shape
        Xt = np.ascontiguousarray(X.T)
        L = np.empty(Xt.shape)
        for j in range(f):
            L[j] = np.searchsorted(self._sorted[j], Xt[j], side="right")
        L = -np.log((L.T + 1.0) / (N + 2.0))
        return -np.sort(-L, axis=1)[:, : self.k].sum(axis=1)
