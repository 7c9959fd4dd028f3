"""``Guard``: fit the feature-space geometry of a classifier once, then score inputs.

Fitting stores what the paper's quantities need (sections 3, 6 and 7.2): the final affine layer
(W, b), the training features with an index for hull distances (eq. 20-25), and every training
point's radius ``d_min(x_t)`` for the union of learned regions. Scoring an input gives its
prediction, exact margins (eq. 7-12), certified hull distance, ambiguity ``d_min - d_hull``
(eq. 26) and union membership. Works on feature arrays; the ONNX model is optional.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .calibrate import Thresholds, calibrate
from .decide import decide
from .detectors import CombinedScore, Evidence
from .errors import InputError, NotFittedError
from .geometry.hull import ConvexHullIndex, HullConfig
from .geometry.margins import compute_margins, lipschitz_constant
from .geometry.regions import UnionOfBalls
from .model import OnnxClassifier
from .types import Decisions, Scores

# Radii of balls whose class borders no other class get this finite stand-in for inf.
_BIG_RADIUS = 1e18
# The constructor's settings: stored in the fitted state (``progress`` and ``device`` are
# run-time choices of whoever loads it, not part of it).
_PARAMS = (
    "nonneg",
    "hull_k",
    "hull_tol",
    "hull_max_rounds",
    "top_support",
    "batch_size",
    "calib_fraction",
    "target_abstain_rate",
    "target_flag_rate",
    "ambiguity_threshold",
    "seed",
    "ood",
)
# Fitted arrays of the state (``train_labels`` and the calibration scores may be absent).
_ARRAYS = (
    "W",
    "b",
    "train_features",
    "radii",
    "train_pred",
    "train_index",
    "train_labels",
    "calib_hull",
    "calib_d_min",
    "calib_ambiguity",
)


@dataclass(frozen=True)
class GuardState:
    """Everything a fitted :class:`Guard` learned, as plain data: what an artifact stores.

    Attributes:
        params: the constructor's settings (:meth:`Guard.get_params`), JSON-serialisable.
        fitted: fitted scalars and small lists, JSON-serialisable: ``class_names``, ``nonneg``
            (the value used), ``lipschitz``, ``thresholds`` (:meth:`Thresholds.to_dict`),
            ``affine_error`` (``None`` for a guard fitted on features).
        arrays: fitted arrays by name: ``W`` (n, f), ``b`` (n,), ``train_features`` (N, f)
            float32, ``radii`` (N,), ``train_pred`` (N,), ``train_index`` (N,) and, when
            present, ``train_labels`` (N,) and the calibration scores ``calib_hull``,
            ``calib_d_min``, ``calib_ambiguity`` (M,).
        ood: the combined OOD score's arrays (``to_arrays()``), or ``None`` without one.
    """

    params: dict[str, Any]
    fitted: dict[str, Any]
    arrays: dict[str, np.ndarray]
    ood: dict[str, np.ndarray] | None


class Guard:
    """Feature-space geometry of a classifier ending in an affine layer.

    Args:
        nonneg: constrain boundary points to ``x >= 0``; ``None`` detects it from the training
            features (ReLU features are nonnegative).
        hull_k: size of the hull's first working set (the query's nearest points of a
            subsample, at most 16; :class:`guard.geometry.hull.HullConfig`).
        hull_tol: target relative gap of the certified hull distance.
        hull_max_rounds: budget of exact scans per query.
        top_support: support points reported per input.
        batch_size: model batch size.
        progress: show progress bars.
        calib_fraction: share of the training data held out (seeded random split) to calibrate
            the decision thresholds when no calibration data is given; 0 disables.
        target_abstain_rate: false-abstain rate of the out-of-distribution threshold.
        target_flag_rate: false adversarial-flag rate of the margin threshold.
        ambiguity_threshold: flag as ambiguous when ``d_min - d_hull`` is below this (paper: 0).
        ood: fit the combined OOD score (:mod:`guard.detectors`) on the calibration data;
            then the guard abstains at ``p_value < target_abstain_rate``.
        seed: seed of the calibration split.
        device: where the hull and union scans run: ``auto`` (a CUDA GPU through torch when
            present, else the CPU), ``cpu`` or ``cuda`` (:mod:`guard.geometry.accel`).
    """

    # Fitted attributes that may be None (the rest are set by fit / from_state, see the docs).
    model_: OnnxClassifier | None
    affine_error_: float | None
    ood_: CombinedScore | None

    def __init__(
        self,
        *,
        nonneg: bool | None = None,
        hull_k: int = 64,
        hull_tol: float = 1e-3,
        hull_max_rounds: int = 100,
        top_support: int = 8,
        batch_size: int = 256,
        progress: bool = False,
        calib_fraction: float = 0.1,
        target_abstain_rate: float = 0.05,
        target_flag_rate: float = 0.01,
        ambiguity_threshold: float = 0.0,
        seed: int = 0,
        ood: bool = True,
        device: str = "auto",
    ) -> None:
        self.nonneg = nonneg
        self.hull_k = hull_k
        self.hull_tol = hull_tol
        self.hull_max_rounds = hull_max_rounds
        self.top_support = top_support
        self.batch_size = batch_size
        self.progress = progress
        self.calib_fraction = calib_fraction
        self.target_abstain_rate = target_abstain_rate
        self.target_flag_rate = target_flag_rate
        self.ambiguity_threshold = ambiguity_threshold
        self.seed = seed
        self.ood = ood
        self.device = device
        self._regions: UnionOfBalls | None = None  # built on first use (see ``regions_``)

    def get_params(self) -> dict[str, Any]:
        """The constructor's settings (scikit-learn's ``get_params``), JSON-serialisable."""
        return {name: getattr(self, name) for name in _PARAMS}

    # ------------------------------------------------------------------ fitting
    def fit(
        self,
        model: OnnxClassifier,
        x: np.ndarray,
        y: np.ndarray | None = None,
        *,
        x_calib: np.ndarray | None = None,
        class_names: list[str] | None = None,
    ) -> Guard:
        """Run the model on training inputs ``x`` and fit the geometry of its features.

        ``x_calib`` (held-out in-distribution inputs) calibrates the thresholds; without it a
        ``calib_fraction`` split of ``x`` is held out.
        """
        logits, feats = model.run(x, batch_size=self.batch_size, progress=self.progress)
        affine_error = model.check_affine(logits, feats)
        calib = None
        if x_calib is not None:
            calib = model.run(x_calib, batch_size=self.batch_size, progress=self.progress)[1]
        self.fit_features(feats, model.W, model.b, y, calib_features=calib, class_names=class_names)
        self.model_, self.affine_error_ = model, affine_error
        return self

    def fit_features(
        self,
        features: np.ndarray,
        W: np.ndarray,
        b: np.ndarray,
        y: np.ndarray | None = None,
        *,
        calib_features: np.ndarray | None = None,
        class_names: list[str] | None = None,
    ) -> Guard:
        """Fit from training features (N, f) and the final layer ``logits = features W^T + b``."""
        F = np.ascontiguousarray(features, dtype=np.float32)
        W = np.ascontiguousarray(W, dtype=np.float64)
        b = np.asarray(b, dtype=np.float64).reshape(-1)
        if F.ndim != 2 or F.shape[0] == 0:
            raise InputError(f"expected training features (N, f) with N >= 1, got {F.shape}")
        if W.ndim != 2 or W.shape[1] != F.shape[1] or b.shape != (W.shape[0],):
            raise InputError(f"expected W (n, {F.shape[1]}) and b (n,), got {W.shape}, {b.shape}")
        if y is not None:
            y = np.asarray(y).reshape(-1)
            if y.shape[0] != F.shape[0] or y.dtype.kind not in "iu":
                raise InputError(
                    f"expected integer labels y of shape ({F.shape[0]},), got {y.dtype} {y.shape}"
                )
        n = W.shape[0]
        if class_names is not None and len(class_names) != n:
            raise InputError(f"expected {n} class names, got {len(class_names)}")
        train_index = np.arange(F.shape[0])
        if calib_features is None and self.calib_fraction > 0:
            n_cal = int(round(self.calib_fraction * F.shape[0]))
            if n_cal < 1 or n_cal >= F.shape[0]:
                raise InputError(
                    f"calib_fraction {self.calib_fraction} of {F.shape[0]} training "
                    f"inputs leaves no calibration or no training data"
                )
            perm = np.random.default_rng(self.seed).permutation(F.shape[0])
            train_index = np.sort(perm[n_cal:])
            calib_features = F[np.sort(perm[:n_cal])]
        self.W_, self.b_ = W, b
        self.model_ = None
        self.affine_error_ = None
        self.train_index_ = train_index
        Ft = F[train_index]
        self.nonneg_ = bool(Ft.min() >= 0) if self.nonneg is None else bool(self.nonneg)
        self.class_names_ = list(class_names) if class_names else [str(i) for i in range(n)]
        self.train_labels_ = None if y is None else y.astype(np.int64)[train_index]
        m = compute_margins(Ft, W, b, self.nonneg_, d_min_only=True, progress=self.progress)
        self.train_pred_ = m.pred
        self.radii_ = np.minimum(m.d_min, _BIG_RADIUS)
        self.lipschitz_ = lipschitz_constant(W)
        self.hull_ = ConvexHullIndex(Ft, self._hull_config(), device=self.device)
        self._regions = None
        self.thresholds_ = Thresholds(ambiguity=self.ambiguity_threshold)
        self.calib_scores_: dict[str, np.ndarray] | None = None
        self.ood_ = None
        if calib_features is not None:
            Fc = np.asarray(calib_features, dtype=np.float32)
            s = self.score_features(Fc)
            if self.ood:
                labels = self.train_labels_ if self.train_labels_ is not None else m.pred
                self.ood_ = CombinedScore(seed=self.seed).fit(
                    Ft, labels, W, b, Evidence.from_scores(s, Fc)
                )
            self.calib_scores_ = {"hull": s.hull_upper, "d_min": s.d_min, "ambiguity": s.ambiguity}
            self.thresholds_ = calibrate(
                s.hull_upper,
                s.d_min,
                abstain_rate=self.target_abstain_rate,
                flag_rate=self.target_flag_rate,
                ambiguity=self.ambiguity_threshold,
            )
        return self

    def _hull_config(self) -> HullConfig:
        return HullConfig(k=self.hull_k, tol=self.hull_tol, max_rounds=self.hull_max_rounds)

    @property
    def regions_(self) -> UnionOfBalls:
        """The union of learned regions (built on first use from the hull's points and radii)."""
        if self._regions is None:
            self._regions = UnionOfBalls(
                self._fitted().hull_.points, self.radii_, device=self.device
            )
        return self._regions

    @property
    def train_features_(self) -> np.ndarray:
        return self._fitted().hull_.points

    def _fitted(self) -> Guard:
        if not hasattr(self, "hull_"):
            raise NotFittedError(
                "this Guard is not fitted: call fit(model, x) or fit_features(features, W, b), "
                "or load an artifact with guard.load_artifact(dir)"
            )
        return self

    # ------------------------------------------------------------------ state
    def to_state(self) -> GuardState:
        """What this fitted guard learned, as plain data (the model itself is not included:
        :mod:`guard.artifact` stores it as a file)."""
        self._fitted()
        arrays = {
            "W": self.W_,
            "b": self.b_,
            "train_features": self.train_features_,
            "radii": self.radii_,
            "train_pred": self.train_pred_,
            "train_index": self.train_index_,
            "train_labels": self.train_labels_,
        }
        for key, arr in (self.calib_scores_ or {}).items():
            arrays[f"calib_{key}"] = arr
        fitted = {
            "class_names": list(self.class_names_),
            "nonneg": bool(self.nonneg_),
            "lipschitz": float(self.lipschitz_),
            "thresholds": self.thresholds_.to_dict(),
            "affine_error": self.affine_error_,
        }
        return GuardState(
            params=self.get_params(),
            fitted=fitted,
            arrays={k: np.asarray(v) for k, v in arrays.items() if v is not None},
            ood=None if self.ood_ is None else self.ood_.to_arrays(),
        )

    @classmethod
    def from_state(
        cls,
        state: GuardState,
        model: OnnxClassifier | None = None,
        *,
        progress: bool = False,
        device: str = "auto",
    ) -> Guard:
        """The guard :meth:`to_state` described, scoring with ``model`` (``None``: features
        only); ``progress`` and ``device`` are this process's run-time choices."""
        unknown = set(state.params) - set(_PARAMS)
        missing = [
            k
            for k in ("W", "b", "train_features", "radii", "train_pred", "train_index")
            if k not in state.arrays
        ]
        if unknown or missing:
            raise InputError(
                f"not a guard state: unknown settings {sorted(unknown)}, missing arrays {missing}"
            )
        guard = cls(**state.params, progress=progress, device=device)
        a, fit = state.arrays, state.fitted
        guard.W_ = np.asarray(a["W"], dtype=np.float64)
        guard.b_ = np.asarray(a["b"], dtype=np.float64)
        F = np.ascontiguousarray(a["train_features"], dtype=np.float32)
        n, f = guard.W_.shape
        N = F.shape[0]
        shapes = {
            "b": (n,),
            "train_features": (N, f),
            "radii": (N,),
            "train_pred": (N,),
            "train_index": (N,),
            "train_labels": (N,),
        }
        bad = [
            f"{k} {a[k].shape} (expected {v})"
            for k, v in shapes.items()
            if k in a and a[k].shape != v
        ]
        if bad:
            raise InputError(f"inconsistent guard state: {', '.join(bad)}")
        guard.radii_, guard.train_pred_ = a["radii"], a["train_pred"]
        guard.train_index_, guard.train_labels_ = a["train_index"], a.get("train_labels")
        guard.nonneg_ = bool(fit["nonneg"])
        guard.class_names_ = list(fit["class_names"])
        guard.lipschitz_ = float(fit["lipschitz"])
        guard.thresholds_ = Thresholds.from_dict(fit["thresholds"])
        guard.affine_error_ = fit.get("affine_error")
        guard.calib_scores_ = None
        if "calib_hull" in a:
            guard.calib_scores_ = {k: a[f"calib_{k}"] for k in ("hull", "d_min", "ambiguity")}
        guard.ood_ = None if state.ood is None else CombinedScore.from_arrays(state.ood)
        guard.model_ = model
        guard.hull_ = ConvexHullIndex(F, guard._hull_config(), device=device)
        return guard

    # ------------------------------------------------------------------ scoring
    def require_model(self) -> OnnxClassifier:
        """The classifier this guard was fitted with (an error for a feature-only guard)."""
        self._fitted()
        if self.model_ is None:
            raise NotFittedError("this Guard has no model: use score_features(features)")
        return self.model_

    def score(self, x: np.ndarray) -> Scores:
        """Run the model on inputs ``x`` and score their features."""
        model = self.require_model()
        logits, feats = model.run(x, batch_size=self.batch_size, progress=self.progress)
        return self.score_features(feats, logits)

    def score_features(self, features: np.ndarray, logits: np.ndarray | None = None) -> Scores:
        """Geometry of feature vectors (N, f); ``logits`` default to ``features W^T + b``."""
        self._fitted()
        F = np.asarray(features)
        f = self.W_.shape[1]
        if F.dtype.kind != "f" or F.ndim != 2 or F.shape[1] != f or F.shape[0] == 0:
            raise InputError(
                f"expected float features of shape (N, {f}) with N >= 1, got {F.dtype} {F.shape}"
            )
        if not np.all(np.isfinite(F)):
            raise InputError("features contain NaN or Inf")
        if logits is None:
            logits = (F.astype(np.float64) @ self.W_.T + self.b_).astype(np.float32)
        m = compute_margins(F, self.W_, self.b_, self.nonneg_, progress=self.progress)
        h = self.hull_.query(F, top_support=self.top_support, progress=self.progress)
        r = self.regions_.query(F)
        ood_score = p_value = np.full(len(F), np.nan)
        ood = self.ood_
        if ood is not None:
            ood_score, p_value = ood.score(
                Evidence(features=F, logits=logits, hull=h.upper, d_min=m.d_min, margins=m.margins)
            )
        return Scores(
            pred=m.pred,
            logits=np.asarray(logits, dtype=np.float32),
            margins=m.margins,
            d_min=m.d_min,
            nearest_class=m.nearest_class,
            flip_point=m.flip_point,
            margin_gap=m.certificate_gap,
            logit_radius=self.lipschitz_ * m.d_min,
            hull_upper=h.upper,
            hull_lower=h.lower,
            hull_converged=h.converged,
            ambiguity=m.d_min - h.upper,
            ood_score=ood_score,
            p_value=p_value,
            in_union=r.in_union,
            n_balls=r.n_balls,
            union_slack=r.slack,
            support_idx=np.where(
                h.support_idx >= 0, self.train_index_[np.maximum(h.support_idx, 0)], -1
            ),
            support_alpha=h.support_alpha,
        )

    def decide(self, scores: Scores) -> Decisions:
        """Abstain / flag decisions for scores, with the fitted thresholds."""
        return decide(scores, self._fitted().thresholds_)
