"""The guard's out-of-distribution (abstain) score: detectors combined on in-distribution data
only, turned into a split-conformal p-value.

Components (detectors of this package, each an outlier score; by name, with the choices of the
combined score, which differ from the peers' published defaults for ``fdbd`` and ``knn``):

=================  =========================================================================
name               detector
=================  =========================================================================
``sphere_hull``    :class:`~.sphere.SphereHullDistance`: certified distance of ``x/||x||`` to
                   the hull of the L2-normalised training features
``hull``           :class:`~.geometric.HullDistance`: certified distance to the training hull
``fdbd``           :class:`~.fdbd.FDBD` ``(margins="exact", centre="median")``: the exact
                   margins of the guard over the distance to the coordinate-wise median
``mahalanobis``    :class:`~.mahalanobis.Mahalanobis` (eigen-whitened pseudo-inverse)
``vim``            :class:`~.vim.ViM` (``principal_dim = f // 2``)
``energy``         :class:`~.energy.Energy`
``knn``            :class:`~.knn.KNN` ``(k=5, subsample=0.1, seed=seed)``: k = 50 on all points
                   is about k = 5 on a 10% subsample, at a tenth of the cost and state
``feature_norm``   :class:`~.feature_norm.FeatureNorm`
=================  =========================================================================

A :class:`~.base.Detector` instance (e.g. ``KNN(k=10)``) may be given instead of a name: a copy
of it is fitted.

Fit (in-distribution data only; nothing is ever fitted on OOD inputs):

1. The components are fitted on the training features (and labels or predictions).
2. The held-out in-distribution calibration data is split at random (``seed``) into a *fit* part
   (``fit_fraction``, default half) and a *p-value* part.
3. On the fit part every component is mapped to a standard-normal scale
   (:class:`~.transform.NormalTransform`).
4. ``combine`` turns the vector of normal scores ``t`` into one score:

   * ``"stouffer_max"`` (default): the first group's Stouffer statistic ``Z_0`` (by default
     every component but the :data:`SPECIALISTS`), or a specialist's ``Z_g`` (each alone by
     default) when it is more than :data:`OFFSET` standard-normal units higher:
     ``max(Z_0, max_g Z_g - offset)``. A specialist detects one kind of input the distances
     miss (near OOD for fDBD, blank images for the low-activation tail) and is noise elsewhere;
     the offset keeps that noise out of the in-distribution tail, where the soft maximum of
     ``"stouffer_or"`` let it in. No weight is fitted.
   * ``"stouffer_or"``: evidence of one kind adds up, evidence of different kinds
     stands alone. The components are split into ``groups``; each group's Stouffer statistic
     ``Z_g = sum_{k in g} t_k / sqrt(|g|)`` (standard normal under independence) and the score
     is their soft maximum ``log sum_g exp(Z_g)``: an input is out of distribution when the
     distances from the training data agree that it is far, *or* when its class-conditional
     boundary score is extreme. By default (``groups=None``) the class-conditional boundary
     score fDBD stands alone and every other component (distances from the training data:
     hulls, ViM, Mahalanobis, kNN, ...) joins one group. No weight is fitted: a component that
     detects nothing can add noise to the in-distribution tail of the maximum, never take the
     weight of a group that detects. On the multi-model OOD suite it keeps the near-OOD
     strength of fDBD (the 8-class model's held-out classes) without its cost on the notMNIST
     model, where an equal fourth vote for fDBD diluted the distances.
   * ``"stouffer"``: ``sum_k (t_k - m_k) / k``, standardised on the fit part: fixed
     equal weights. Nothing fitted on in-distribution data can move weight onto a component, so
     a component that detects nothing (it looks the same on ID and OOD inputs) dilutes the
     score, but never takes most of the weight of one that detects.
   * ``"fisher"``: ``sum_k -log(1 - Phi(t_k))``, Fisher's combination of the components'
     ID-calibrated tail probabilities, also with fixed equal weights (one component far in its
     tail weighs more than under Stouffer).
   * ``"min_variance"``: ``w . (t - m) / sqrt(w' C w)`` where ``m``, ``C`` are the mean
     and covariance of ``t`` on the fit part and ``w`` minimises the ID variance ``w' C w`` over
     the simplex (``w >= 0``, ``sum w = 1``; :func:`guard.geometry.qp.min_norm_point`). Every
     component counts with a nonnegative weight (the score is monotone in each), and strongly
     correlated components (hull distance and Mahalanobis both measure distance from the data)
     share one vote instead of outvoting the rest. It maximises ``(1' w)^2 / w' C w`` among
     nonnegative weights: for OOD inputs shifted by the same amount in every component, the most
     powerful linear test under a Gaussian ID model of ``t``. Caveat: it favours components
     weakly correlated with the others whether or not they detect anything, so add only
     components that are OOD scores in their own right (``feature_norm`` and ``energy`` are weak
     here and lower the results when added). It was the default until the multi-model OOD suite
     (``scripts/eval_ood_suite.py``) showed the failure: on a model it was not designed on it gave
     most of the weight to components that detected little.
   * ``"max"``: ``max_k t_k`` (a min-p rule).
5. The combined scores of the p-value part, which the combination was not fitted on, are stored
   sorted; the p-value of a new score is its split-conformal p-value against them
   (:func:`~.conformal.p_value`): abstaining where ``p <= a`` keeps the false-abstain rate of
   exchangeable in-distribution inputs at most ``a``.

Scoring an input costs ``O(f^2 + n f)`` plus a few binary searches (and ``O(m f)`` for the
optional kNN subsample of ``m`` points) for most components; the half-whitened hulls of the
default (:mod:`.whitened`) are certified hull queries of their own (about two passes over the
training features each: 1.6 ms per image for the two on 54,000 x 64, ``bench/ood.py``).
"""

from __future__ import annotations

import copy
import json
import logging
import math
from collections.abc import Mapping, Sequence

import numpy as np
from scipy.special import log_ndtr

from ..errors import InputError, NotFittedError
from ..geometry.hull_view import HullView
from ..geometry.qp import min_norm_point
from .base import Detector, Evidence, as_features
from .conformal import p_value
from .energy import Energy
from .fdbd import FDBD
from .feature_norm import FeatureNorm
from .geometric import Ambiguity, HullDistance
from .knn import KNN
from .lse import logsumexp
from .mahalanobis import Mahalanobis
from .msp import MSP
from .sphere import SphereHullDistance
from .transform import NormalTransform
from .vim import ViM
from .whitened import LowTail, WhitenedMetricSphereHull, WhitenedSphereHull

__all__ = ["COMBINE", "COMPONENTS", "DEFAULT_COMPONENTS", "MIN_CALIB", "CombinedScore", "component"]

log = logging.getLogger(__name__)

#: Components known by name (see the module docstring).
COMPONENTS = (
    "hw_sphere_hull",
    "hw_metric_sphere_hull",
    "low_tail",
    "sphere_hull",
    "hull",
    "fdbd",
    "mahalanobis",
    "vim",
    "energy",
    "knn",
    "feature_norm",
)
#: Combination rules.
COMBINE = ("stouffer_max", "stouffer_or", "stouffer", "fisher", "min_variance", "max")
#: Components that stand alone under ``"stouffer_max"`` when no ``groups`` are given (the
#: specialists, each for a kind of input the distances miss); the others form the first group.
SPECIALISTS = ("fdbd", "low_tail", "hull")
#: How far (in standard-normal units) a specialist stands below the first group under
#: ``"stouffer_max"``.
OFFSET = 0.25
#: Components that stand alone under ``"stouffer_or"`` when no ``groups`` are given (the
#: class-conditional boundary score); the other components form one group.
ALONE = ("fdbd",)
#: The default, chosen on the multi-model OOD suite by its worst case against the best peer over
#: every (model, OOD set) pair (``reports/ood_suite/suite.md``): the two half-whitened spherical
#: hull distances in one group (:mod:`.whitened`), and three specialists alone, each for what the
#: distances miss: the exact-margin fDBD (near OOD: held-out classes), the low-activation tail
#: (constant images) and the raw hull distance.
DEFAULT_COMPONENTS = ("hw_sphere_hull", "hw_metric_sphere_hull", "fdbd", "low_tail", "hull")
#: The default combination rule (no weight fitted; see the module docstring): the Stouffer
#: statistic of the two half-whitened hull distances, or a specialist :data:`OFFSET` above it.
DEFAULT_COMBINE = "stouffer_max"
#: Fewest held-out in-distribution calibration inputs ``fit`` accepts (half fit the
#: combination, half give the p-values).
MIN_CALIB = 100
_GROUPED = ("stouffer_max", "stouffer_or")  # the rules that combine groups of components
_FORMAT = 3  # of to_arrays (3 stores the groups; 2 is read; 1 predates the detectors package)
#: Every detector class by name: what :meth:`CombinedScore.from_arrays` can rebuild.
CLASSES: dict[str, type[Detector]] = {
    cls.name: cls
    for cls in (
        SphereHullDistance,
        WhitenedSphereHull,
        WhitenedMetricSphereHull,
        LowTail,
        HullDistance,
        FDBD,
        Mahalanobis,
        ViM,
        Energy,
        KNN,
        FeatureNorm,
        MSP,
        Ambiguity,
    )
}


def component(name: str, seed: int = 0) -> Detector:
    """The combined score's (unfitted) component ``name`` from :data:`COMPONENTS`."""
    if name == "fdbd":
        return FDBD(margins="exact", centre="median")
    if name == "knn":
        return KNN(k=5, subsample=0.1, seed=seed)
    if name not in COMPONENTS:
        raise InputError(f"unknown component {name!r}; choose from {COMPONENTS}")
    return CLASSES[name]()


class CombinedScore:
    """Combined OOD score of detectors, with split-conformal p-values (module docstring).

    Args:
        components: names from :data:`COMPONENTS` or :class:`~.base.Detector` instances (of
            distinct names); default :data:`DEFAULT_COMPONENTS`.
        combine: one of :data:`COMBINE`.
        seed: seed of the calibration split (and of the ``knn`` subsample, built by name).
        groups: for ``"stouffer_or"``, a partition of the components' names into groups;
            ``None``: each of :data:`ALONE` by itself, the other components in one group.
        fit_fraction: share of the calibration data that fits the combination; the rest gives
            the p-values.

    After :meth:`fit`: ``detectors_`` (the fitted components), ``transforms_``, ``mean_`` (C,),
    ``cov_`` (C, C), ``weights_`` (C,), ``scale_``, ``calib_scores_`` (ascending), ``n_fit_``,
    ``groups_`` (the groups as tuples of component indices; every component alone unless
    ``"stouffer_or"``).
    :meth:`score` gives ``(ood_score, p_value)``; abstain where ``p_value <= alpha`` for a
    false-abstain rate of at most ``alpha``.
    """

    def __init__(
        self,
        components: Sequence[str | Detector] = DEFAULT_COMPONENTS,
        combine: str = DEFAULT_COMBINE,
        seed: int = 0,
        *,
        groups: Sequence[Sequence[str]] | None = None,
        fit_fraction: float = 0.5,
        offset: float = OFFSET,
    ) -> None:
        components = tuple(components)
        names = [c.name if isinstance(c, Detector) else c for c in components]
        bad = [
            c
            for c in components
            if not (isinstance(c, Detector) and c.name in CLASSES or c in COMPONENTS)
        ]
        if not components or bad or len(set(names)) != len(names):
            raise InputError(
                f"components must be distinct names from {COMPONENTS} or detector "
                f"instances, got {components}"
            )
        if combine not in COMBINE:
            raise InputError(f"combine must be one of {COMBINE}, got {combine!r}")
        if not 0 < fit_fraction < 1:
            raise InputError(f"fit_fraction must be in (0, 1), got {fit_fraction}")
        self.components = components
        self.combine = combine
        self.seed = int(seed)
        self.fit_fraction = float(fit_fraction)
        self.offset = float(offset)
        if not math.isfinite(self.offset) or self.offset < 0:
            raise InputError(f"offset must be a finite number >= 0, got {offset}")
        self.groups = None if groups is None else tuple(tuple(g) for g in groups)
        if self.groups is not None:
            flat = [n for g in self.groups for n in g]
            if combine not in _GROUPED or sorted(flat) != sorted(names) or not all(self.groups):
                raise InputError(
                    f"groups are for combine in {_GROUPED} and must split the components "
                    f"{tuple(names)} into non-empty groups, each name once; got {groups}"
                )

    def _resolve_groups(self, names: Sequence[str]) -> tuple[tuple[int, ...], ...]:
        if self.combine not in _GROUPED:
            return tuple((k,) for k in range(len(names)))
        if self.groups is not None:
            return tuple(tuple(names.index(n) for n in g) for g in self.groups)
        solo = ALONE if self.combine == "stouffer_or" else SPECIALISTS
        rest = tuple(k for k, n in enumerate(names) if n not in solo)
        alone = tuple((k,) for k, n in enumerate(names) if n in solo)
        return ((rest,) if rest else ()) + alone

    def hull_views(self) -> dict[str, HullView]:
        """The hulls whose distances the components read (by component name), for a guard to
        compute in its shared passes and hand over as ``Evidence.hulls``."""
        return {
            d.name: d.hull_view
            for d in getattr(self, "detectors_", [])
            if isinstance(d, WhitenedSphereHull)
        }

    @property
    def names(self) -> tuple[str, ...]:
        """The components' names, in order."""
        return tuple(c.name if isinstance(c, Detector) else c for c in self.components)

    # ------------------------------------------------------------------ fitting
    def fit(
        self,
        train_features: np.ndarray,
        train_labels: np.ndarray | None,
        W: np.ndarray,
        b: np.ndarray,
        calib: Evidence,
    ) -> CombinedScore:
        """Fit on in-distribution data only.

        Args:
            train_features: (N, f) training features (the guard's), N >= 2.
            train_labels: (N,) int labels, or the model's predictions; ``None``: predictions.
            W, b: final layer ``logits = features W^T + b``, (n, f) with n >= 2, and (n,).
            calib: :class:`~.base.Evidence` of at least :data:`MIN_CALIB` held-out
                in-distribution inputs (never the training features) with what the components
                read (``Evidence.from_scores(guard.score_features(x), x)`` has everything).

        The same as :meth:`fit_components` then :meth:`calibrate` (a guard calls the two, so
        that the calibration inputs' hull distances come from the passes that serve queries,
        :meth:`hull_views`).
        """
        _check_calib(calib)  # (before the components' fit, which takes a while)
        return self.fit_components(train_features, train_labels, W, b).calibrate(calib)

    def fit_components(
        self,
        train_features: np.ndarray,
        train_labels: np.ndarray | None,
        W: np.ndarray,
        b: np.ndarray,
    ) -> CombinedScore:
        """Fit the components on the training data (arguments as :meth:`fit`); then
        :meth:`calibrate`."""
        W = np.asarray(W, dtype=np.float64)
        b = np.asarray(b, dtype=np.float64).reshape(-1)
        if W.ndim != 2 or b.shape != (W.shape[0],) or W.shape[0] < 2:
            raise InputError(f"expected W (n, f) with n >= 2 and b (n,), got {W.shape}, {b.shape}")
        F = as_features(train_features, W.shape[1], "training features")
        if F.shape[0] < 2:
            raise InputError(f"expected at least 2 training features, got {F.shape[0]}")
        if train_labels is None:
            y = np.argmax(F @ W.T + b, axis=1)
        else:
            y = np.asarray(train_labels).reshape(-1)
            if y.shape != (F.shape[0],) or y.dtype.kind not in "iu":
                raise InputError(
                    f"expected integer train_labels of shape ({F.shape[0]},), got "
                    f"{y.dtype} {y.shape}"
                )
        self.detectors_ = [
            (copy.deepcopy(c) if isinstance(c, Detector) else component(c, self.seed)).fit(
                F, y.astype(np.int64), W, b
            )
            for c in self.components
        ]
        self.groups_ = self._resolve_groups(self.names)
        return self

    def calibrate(self, calib: Evidence) -> CombinedScore:
        """Fit the combination and the p-values' reference on held-out in-distribution inputs
        (``calib`` as in :meth:`fit`), after :meth:`fit_components`."""
        if not hasattr(self, "detectors_"):
            raise NotFittedError("CombinedScore.calibrate needs fit_components first")
        m_cal = _check_calib(calib)
        raw = self._raw(calib)  # (M, C)
        perm = np.random.default_rng(self.seed).permutation(m_cal)
        n_fit = int(round(self.fit_fraction * m_cal))
        n_fit = min(max(n_fit, MIN_CALIB // 2), m_cal - MIN_CALIB // 2)
        A, B = raw[perm[:n_fit]], raw[perm[n_fit:]]
        self.transforms_ = [NormalTransform.fit(A[:, k]) for k in range(raw.shape[1])]
        T = self._normal(A)
        self.mean_ = T.mean(axis=0)
        C = np.atleast_2d(np.cov(T, rowvar=False))
        self.cov_ = C
        self.weights_ = self._weights(C)
        self.scale_ = float(math.sqrt(max(float(self.weights_ @ C @ self.weights_), 1e-300)))
        # the p-value reference: the held-out part the transforms and weights never saw
        self.calib_scores_ = np.sort(self._combine(self._normal(B)))
        self.n_fit_ = int(n_fit)
        log.info(
            "fitted %r: weights %s, %d p-value calibration inputs",
            self,
            np.round(self.weights_, 3).tolist(),
            self.calib_scores_.size,
        )
        return self

    def _weights(self, C: np.ndarray) -> np.ndarray:
        k = C.shape[0]
        if self.combine != "min_variance" or k == 1:
            return np.full(k, 1.0 / k)
        jitter = 1e-10 * max(float(np.trace(C)) / k, 1e-300)
        L = np.linalg.cholesky(C + jitter * np.eye(k))
        return min_norm_point(L)  # argmin ||L^T w|| = w' C w over the simplex

    # ------------------------------------------------------------------ scoring
    def _check(self) -> None:
        if not hasattr(self, "calib_scores_"):
            raise NotFittedError(
                "this CombinedScore is not fitted: call fit(train_features, "
                "train_labels, W, b, calib) or from_arrays(...)"
            )

    def _raw(self, ev: Evidence) -> np.ndarray:
        """Raw component scores (N, C), higher = more OOD."""
        if not isinstance(ev, Evidence):
            raise InputError(
                f"expected Evidence, got {type(ev).__name__} (a guard's Scores: "
                f"Evidence.from_scores(scores, features))"
            )
        R = np.empty((len(ev), len(self.detectors_)))
        for k, det in enumerate(self.detectors_):
            R[:, k] = det.score(ev)
        if not np.isfinite(R).all():
            raise InputError(
                "component scores contain NaN or Inf (check hull distances, "
                "features and logits for non-finite values)"
            )
        return R

    def _normal(self, R: np.ndarray) -> np.ndarray:
        T = np.empty_like(R)
        for k, t in enumerate(self.transforms_):
            T[:, k] = t(R[:, k])
        return T

    def _combine(self, T: np.ndarray) -> np.ndarray:
        if self.combine in _GROUPED:
            Z = np.stack([T[:, list(g)].sum(axis=1) / math.sqrt(len(g)) for g in self.groups_], 1)
            if self.combine == "stouffer_or":
                return logsumexp(Z)
            return np.maximum(Z[:, 0], (Z[:, 1:] - self.offset).max(axis=1, initial=-np.inf))
        if self.combine == "fisher":
            return -log_ndtr(-T).sum(axis=1)  # -log(1 - Phi(t)), accurate in the tail
        if self.combine == "max":
            return T.max(axis=1)
        return (T - self.mean_) @ self.weights_ / self.scale_

    def component_scores(self, evidence: Evidence) -> dict[str, np.ndarray]:
        """Raw component scores by name, each (N,), higher = more OOD."""
        self._check()
        R = self._raw(evidence)
        return {det.name: R[:, k] for k, det in enumerate(self.detectors_)}

    def score(self, evidence: Evidence) -> tuple[np.ndarray, np.ndarray]:
        """``(ood_score, p_value)``, each (N,) float64, of N inputs' :class:`~.base.Evidence`
        (only the fields the components read are required). ``ood_score``: higher = more OOD;
        ``p_value`` in ``[1/(n_calib+1), 1]``."""
        self._check()
        s = self._combine(self._normal(self._raw(evidence)))
        return s, p_value(s, self.calib_scores_)

    # ------------------------------------------------------------------ persistence
    def to_arrays(self) -> dict[str, np.ndarray]:
        """Everything fitted as numpy arrays (``np.savez`` / ``np.load(allow_pickle=False)``
        round-trip it bit for bit): each component's :meth:`~.base.Detector.to_arrays` under
        ``"<name>.<key>"``, the combination, and the settings as a JSON string ``"config"``."""
        self._check()
        out = {f"{det.name}.{k}": v for det in self.detectors_ for k, v in det.to_arrays().items()}
        out |= {
            "mean": self.mean_,
            "cov": self.cov_,
            "weights": self.weights_,
            "scale": np.array(self.scale_),
            "calib_scores": self.calib_scores_,
            "slopes": np.array([t.slope for t in self.transforms_]),
        }
        for k, t in enumerate(self.transforms_):
            out[f"transform_x_{k}"], out[f"transform_z_{k}"] = t.x, t.z
        config = {
            "format": _FORMAT,
            "components": list(self.names),
            "by_name": [not isinstance(c, Detector) for c in self.components],
            "combine": self.combine,
            "seed": self.seed,
            "fit_fraction": self.fit_fraction,
            "n_fit": self.n_fit_,
            "groups": None if self.groups is None else [list(g) for g in self.groups],
            "offset": self.offset,
        }
        out["config"] = np.array(json.dumps(config))
        return {k: np.asarray(v) for k, v in out.items()}

    @classmethod
    def from_arrays(
        cls, arrays: Mapping[str, np.ndarray], train_features: np.ndarray | None = None
    ) -> CombinedScore:
        """The combined score :meth:`to_arrays` wrote, exactly (bit for bit). Components that
        keep an index of the training features (:mod:`.whitened`) rebuild it from
        ``train_features`` (the guard's own)."""
        try:
            cfg = json.loads(str(np.asarray(arrays["config"])))
            if cfg.get("format") not in (2, _FORMAT):
                raise InputError(
                    f"combined-score arrays of format {cfg.get('format')!r}; this "
                    f"guard reads formats 2 and {_FORMAT}: refit (`guard fit`)"
                )
            dets = []
            for name in cfg["components"]:
                own = {k[len(name) + 1 :]: v for k, v in arrays.items() if k.startswith(name + ".")}
                det = CLASSES[name].from_arrays(own)
                if hasattr(det, "bind"):
                    if train_features is None:
                        raise InputError(
                            f"the component {name!r} needs the guard's training features to "
                            f"load: CombinedScore.from_arrays(arrays, train_features)"
                        )
                    det.bind(train_features)
                dets.append(det)
            comps = [
                n if by_name else d
                for n, d, by_name in zip(cfg["components"], dets, cfg["by_name"], strict=True)
            ]
            self = cls(
                comps,
                cfg["combine"],
                cfg["seed"],
                groups=cfg.get("groups"),
                fit_fraction=cfg["fit_fraction"],
                offset=cfg.get("offset", OFFSET),
            )
            self.detectors_ = dets
            self.groups_ = self._resolve_groups(self.names)
            self.transforms_ = [
                NormalTransform(
                    np.array(arrays[f"transform_x_{k}"], dtype=np.float64),
                    np.array(arrays[f"transform_z_{k}"], dtype=np.float64),
                    float(slope),
                )
                for k, slope in enumerate(np.asarray(arrays["slopes"], dtype=np.float64))
            ]
            if len(self.transforms_) != len(dets):
                raise InputError(f"{len(self.transforms_)} transforms for {len(dets)} components")
            for key in ("mean", "cov", "weights", "calib_scores"):
                setattr(self, f"{key}_", np.array(arrays[key], dtype=np.float64))
            self.scale_ = float(np.asarray(arrays["scale"]))
            self.n_fit_ = int(cfg["n_fit"])
            k = len(dets)
            shapes = {"mean": (k,), "cov": (k, k), "weights": (k,)}
            for key, want in shapes.items():
                if getattr(self, f"{key}_").shape != want:
                    raise InputError(
                        f"combined-score array {key!r} of shape "
                        f"{getattr(self, f'{key}_').shape}, expected {want} for {k} components"
                    )
            if self.calib_scores_.ndim != 1 or self.calib_scores_.size == 0:
                raise InputError("combined-score array 'calib_scores' must be a non-empty vector")
        except (KeyError, ValueError, TypeError) as err:
            if isinstance(err, InputError):
                raise
            raise InputError(f"not the arrays of a CombinedScore: missing or bad {err}") from err
        return self

    def __repr__(self) -> str:
        groups = "" if self.groups is None else f", groups={self.groups!r}"
        return (
            f"CombinedScore(components={self.names!r}, combine={self.combine!r}, "
            f"seed={self.seed}{groups})"
        )


def _check_calib(calib: Evidence) -> int:
    """The number of calibration inputs, or an InputError."""
    if not isinstance(calib, Evidence):
        raise InputError(
            f"expected calib: an Evidence of held-out in-distribution inputs, "
            f"got {type(calib).__name__}"
        )
    m_cal = len(calib)
    if m_cal < MIN_CALIB:
        raise InputError(
            f"the combined score needs at least {MIN_CALIB} held-out "
            f"in-distribution calibration inputs (half fit the combination, "
            f"half give the p-values), got {m_cal}"
        )
    return m_cal
