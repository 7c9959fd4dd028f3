"""``Guard``: fit the feature-space geometry of a classifier once, then score inputs.

Fitting stores what the paper's quantities need (sections 3, 6 and 7.2): the final affine layer
(W, b), the training features with an index for hull distances (eq. 20-25), and every training
point's radius ``d_min(x_t)`` for the union of learned regions. Scoring an input gives its
prediction, exact margins (eq. 7-12), certified hull distance, ambiguity ``d_min - d_hull``
(eq. 26), union membership and the certified hull distance of the L2-normalised features
(:mod:`guard.detectors.sphere`; the hull of the normalised training features is rebuilt from
them, never stored). Works on feature arrays; the ONNX model is optional.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .calibrate import Thresholds, calibrate
from .concurrency import resolve_jobs, run_tasks
from .decide import decide
from .detectors import CombinedScore, Evidence, SphereHullDistance
from .errors import InputError, NotFittedError
from .geometry.errors import GeometryError
from .geometry.hull import ConvexHullIndex, HullConfig
from .geometry.hull_pair import HullPair
from .geometry.margins import compute_margins, lipschitz_constant
from .geometry.radii import training_radii
from .geometry.regions import UnionOfBalls
from .model import OnnxClassifier
from .types import Decisions, Scores

# Radii of balls whose class borders no other class get this finite stand-in for inf.
_BIG_RADIUS = 1e18
# The constructor's settings: stored in the fitted state (``progress``, ``device`` and
# ``n_jobs`` are run-time choices of whoever loads it, not part of it).
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
# Fitted arrays of the state and their dtypes (``train_labels``, the calibration scores and the
# model's reference outputs may be absent; the last two groups are all present or all absent).
_ARRAYS: dict[str, type[np.generic]] = {
    "W": np.float64,
    "b": np.float64,
    "train_features": np.float32,
    "radii": np.float64,
    "train_pred": np.int64,
    "train_index": np.int64,
    "train_labels": np.int64,
    "calib_hull": np.float64,
    "calib_d_min": np.float64,
    "calib_ambiguity": np.float64,
    "reference_inputs": np.float32,
    "reference_logits": np.float32,
    "reference_features": np.float32,
}
_REQUIRED_ARRAYS = ("W", "b", "train_features", "radii", "train_pred", "train_index")
_CALIB_ARRAYS = ("calib_hull", "calib_d_min", "calib_ambiguity")
_REFERENCE_ARRAYS = ("reference_inputs", "reference_logits", "reference_features")
_FITTED = ("class_names", "nonneg", "lipschitz", "thresholds", "affine_error")
#: Training inputs kept (with the model's logits and features on them) to check at load that a
#: model is the one fitted on.
N_REFERENCE = 8
#: Allowed difference of the reference logits / features at load, relative to the largest
#: magnitude of each (at least 1). Both runs use onnxruntime's CPU provider (never TF32 on a GPU):
#: bit for bit the same on one machine; another CPU's kernels (AVX2, AVX-512, NEON) only round
#: float32 sums in another order (~1e-6); another model changes them by O(1). The same bound as
#: the fit's affine check (``OnnxClassifier.check_affine``).
REFERENCE_RTOL = 1e-4
#: Allowed difference of the model's final layer (W, b) at load, relative to its largest weight:
#: both are read from the same float32 weights in float64 (only refactoring noise, ~1e-16).
HEAD_RTOL = 1e-9


@dataclass(frozen=True)
class GuardState:
    """Everything a fitted :class:`Guard` learned, as plain data: what an artifact stores.

    Attributes:
        params: the constructor's settings (:meth:`Guard.get_params`), JSON-serialisable.
        fitted: fitted scalars and small lists, JSON-serialisable: ``class_names``, ``nonneg``
            (the value used), ``lipschitz``, ``thresholds`` (:meth:`Thresholds.to_dict`),
            ``affine_error`` (``None`` for a guard fitted on features).
        arrays: fitted arrays by name: ``W`` (n, f) and ``b`` (n,) float64, ``train_features``
            (N, f) float32, ``radii`` (N,) float64, ``train_pred`` (N,) and ``train_index``
            (N,) int64 and, when present, ``train_labels`` (N,) int64, the calibration scores
            ``calib_hull``, ``calib_d_min``, ``calib_ambiguity`` (M,) float64 and, for a guard
            fitted with a model, ``reference_inputs`` (R, ...) float32 (training inputs as given
            to the model) with the model's ``reference_logits`` (R, n) and
            ``reference_features`` (R, f) float32 on them.
        ood: the combined OOD score's arrays (``to_arrays()``), or ``None`` without one.

    :meth:`Guard.from_state` (and :meth:`Guard.to_state`) refuse a state that is not exactly
    this: every setting, scalar and array of its type, dtype, shape and range, consistent with
    the others (:func:`check_state`).
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
        n_jobs: threads :meth:`score_features` runs on (the two hulls' and the union's shared
            passes, :class:`~guard.geometry.hull_pair.HullPair`, take up to 2, the margins one
            beside them; more gain nothing): 1 = the caller's thread only, -1 = every
            available core (:mod:`guard.concurrency`). The results do not depend on it.
    """

    # Fitted attributes that may be None (the rest are set by fit / from_state, see the docs).
    model_: OnnxClassifier | None
    affine_error_: float | None
    ood_: CombinedScore | None
    # Training inputs and the model's outputs on them (N_REFERENCE rows; None without a model).
    reference_inputs_: np.ndarray | None
    reference_logits_: np.ndarray | None
    reference_features_: np.ndarray | None

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
        n_jobs: int = 1,
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
        self.n_jobs = n_jobs
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
        # A few training inputs, spread over the set, and the model's outputs on them as one
        # batch on the CPU (what from_state re-runs to check a model is this one).
        rows = np.unique(np.linspace(0, len(feats) - 1, min(N_REFERENCE, len(feats))).round())
        ref_x = model.prepare(np.asarray(x)[rows.astype(np.int64)])
        ref_logits, ref_feats = _cpu(model).run(ref_x, batch_size=len(ref_x))
        self.reference_inputs_ = ref_x
        self.reference_logits_, self.reference_features_ = ref_logits, ref_feats
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
            # Labels index the model's classes: out of range, they would still fit the OOD
            # score's class-conditional components (class means, ...) on classes it lacks.
            n_cls = W.shape[0]
            bad = np.flatnonzero((y < 0) | (y >= n_cls))
            if bad.size:
                k = int(bad[0])
                raise InputError(
                    f"expected labels y in 0..{n_cls - 1} (the model has {n_cls} classes), got "
                    f"{bad.size} outside, e.g. y[{k}] = {int(y[k])} (labels range "
                    f"{int(y.min())}..{int(y.max())})"
                )
            if y.size and np.all(y == y[0]):
                raise InputError(
                    f"all {y.size} labels y are class {int(y[0])}: the guard's OOD score "
                    f"compares each input with the training features of every class (class "
                    f"means, class-conditional distances), which needs labels of at least 2 "
                    f"classes; pass labelled data of several classes, or omit y to use the "
                    f"model's predictions"
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
        self.reference_inputs_ = self.reference_logits_ = self.reference_features_ = None
        self.train_index_ = train_index
        Ft = F[train_index]
        self.nonneg_ = bool(Ft.min() >= 0) if self.nonneg is None else bool(self.nonneg)
        self.class_names_ = list(class_names) if class_names else [str(i) for i in range(n)]
        self.train_labels_ = None if y is None else y.astype(np.int64)[train_index]
        # every core, resumable chunks (guard.geometry.radii): the same values as compute_margins
        m = training_radii(Ft, W, b, self.nonneg_, progress=self.progress)
        self.train_pred_ = m.pred
        self.radii_ = np.minimum(m.d_min, _BIG_RADIUS)
        self.lipschitz_ = lipschitz_constant(W)
        self.hull_ = ConvexHullIndex(Ft, self._hull_config(), device=self.device)
        self.hulls_ = HullPair(self.hull_, self._hull_config(), device=self.device)
        self.sphere_ = self.hulls_.sphere_view
        self._regions = None
        self.thresholds_ = Thresholds(ambiguity=self.ambiguity_threshold)
        self.calib_scores_: dict[str, np.ndarray] | None = None
        self.ood_ = None
        if calib_features is not None:
            Fc = np.asarray(calib_features, dtype=np.float32)
            ood = None
            if self.ood:
                # the components first, then the calibration inputs' geometry with their hulls
                # from the same shared passes that serve queries (score_features)
                labels = self.train_labels_ if self.train_labels_ is not None else m.pred
                ood = CombinedScore(seed=self.seed).fit_components(self.hull_.points, labels, W, b)
            s, ev = self._geometry(Fc, None, ood, False)
            if ood is not None:
                self.ood_ = ood.calibrate(ev)
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
        :mod:`guard.artifact` stores it as a file). Checked like :meth:`from_state` checks it,
        so that what is saved can be loaded."""
        self._fitted()
        arrays = {
            "W": self.W_,
            "b": self.b_,
            "train_features": self.train_features_,
            "radii": self.radii_,
            "train_pred": self.train_pred_,
            "train_index": self.train_index_,
            "train_labels": self.train_labels_,
            "reference_inputs": self.reference_inputs_,
            "reference_logits": self.reference_logits_,
            "reference_features": self.reference_features_,
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
        state = GuardState(
            params=self.get_params(),
            fitted=fitted,
            arrays={k: np.asarray(v, dtype=_ARRAYS[k]) for k, v in arrays.items() if v is not None},
            ood=None if self.ood_ is None else self.ood_.to_arrays(),
        )
        check_state(state)
        return state

    @classmethod
    def from_state(
        cls,
        state: GuardState,
        model: OnnxClassifier | None = None,
        *,
        progress: bool = False,
        device: str = "auto",
        n_jobs: int = 1,
    ) -> Guard:
        """The guard :meth:`to_state` described, scoring with ``model`` (``None``: features
        only); ``progress``, ``device`` and ``n_jobs`` are this process's run-time choices.

        Raises:
            InputError: (one line) if the state is not exactly what :meth:`to_state` writes
                (:func:`check_state`), or ``model`` is not the model it was fitted on
                (:meth:`check_model`).
        """
        check_state(state)
        a, fit = state.arrays, state.fitted
        guard = cls(**state.params, progress=progress, device=device, n_jobs=n_jobs)
        guard.W_, guard.b_ = a["W"], a["b"]
        guard.radii_, guard.train_pred_ = a["radii"], a["train_pred"]
        guard.train_index_, guard.train_labels_ = a["train_index"], a.get("train_labels")
        guard.reference_inputs_ = a.get("reference_inputs")
        guard.reference_logits_ = a.get("reference_logits")
        guard.reference_features_ = a.get("reference_features")
        guard.nonneg_ = fit["nonneg"]
        guard.class_names_ = list(fit["class_names"])
        guard.lipschitz_ = float(fit["lipschitz"])
        guard.thresholds_ = Thresholds.from_dict(fit["thresholds"])
        guard.affine_error_ = None if fit["affine_error"] is None else float(fit["affine_error"])
        guard.calib_scores_ = None
        if "calib_hull" in a:
            guard.calib_scores_ = {k: a[f"calib_{k}"] for k in ("hull", "d_min", "ambiguity")}
        guard.hull_ = ConvexHullIndex(a["train_features"], guard._hull_config(), device=device)
        # (bound to the hull's own points: its components' hulls ride on the hull's passes)
        guard.ood_ = None if state.ood is None else _combined_score(state.ood, guard.hull_.points)
        guard.hulls_ = HullPair(guard.hull_, guard._hull_config(), device=device)
        guard.sphere_ = guard.hulls_.sphere_view
        if model is not None:
            guard.check_model(model)
        guard.model_ = model
        guard._self_test()
        return guard

    def _self_test(self) -> None:
        """Score a few of the state's own feature vectors once, so that a state whose arrays
        are consistent in every checked way but still cannot score (e.g. corrupt OOD arrays) is
        refused at load, not at the first request."""
        probe = self.reference_features_
        if probe is None:
            probe = self.train_features_[:N_REFERENCE]
        progress, self.progress = self.progress, False
        try:
            self.score_features(probe)
        except GeometryError:
            raise  # the caller tells a device failure from a corrupt state
        except Exception as exc:  # noqa: BLE001 - whatever fails here, the state is unusable
            raise InputError(
                f"the fitted state cannot score {len(probe)} of its own training features "
                f"({type(exc).__name__}: {exc})"
            ) from None
        finally:
            self.progress = progress

    def check_model(self, model: OnnxClassifier) -> None:
        """InputError (one line) unless ``model`` is the model this guard was fitted on: its
        final layer is ``W, b`` (to :data:`HEAD_RTOL`) and, run on onnxruntime's CPU provider,
        it gives the stored logits and features on the reference inputs (to
        :data:`REFERENCE_RTOL` of their largest magnitude)."""
        self._fitted()
        not_it = "not the model this guard was fitted on"
        W, b = np.asarray(model.W, dtype=np.float64), np.asarray(model.b, dtype=np.float64)
        if W.shape != self.W_.shape or b.shape != self.b_.shape:
            raise InputError(
                f"the model's final layer has W {W.shape}, b {b.shape}, the guard's "
                f"W {self.W_.shape}, b {self.b_.shape}: {not_it}"
            )
        scale = max(float(np.abs(self.W_).max()), float(np.abs(self.b_).max()), 1e-300)
        err = max(float(np.abs(W - self.W_).max()), float(np.abs(b - self.b_).max())) / scale
        if not err <= HEAD_RTOL:
            raise InputError(
                f"the model's final layer (W, b) differs from the fitted one by {err:.1e} of its "
                f"largest weight (allowed {HEAD_RTOL:.0e}): {not_it}"
            )
        x = self.reference_inputs_
        if x is None or self.reference_logits_ is None or self.reference_features_ is None:
            raise InputError(
                "this guard has no reference inputs to check a model against (it was fitted on "
                "features): use it without a model, or refit it with the model"
            )
        try:
            logits, feats = _cpu(model).run(x, batch_size=len(x))
        except InputError as exc:
            raise InputError(
                f"the model does not take the reference inputs ({exc}): {not_it}"
            ) from None
        for name, got, want in (
            ("logits", logits, self.reference_logits_),
            ("features", feats, self.reference_features_),
        ):
            if got.shape != want.shape:
                raise InputError(
                    f"the model's {name} on the reference inputs have shape {got.shape}, the "
                    f"fit's {want.shape}: {not_it}"
                )
            diff = np.abs(got.astype(np.float64) - want.astype(np.float64))
            err = float(diff.max() / max(1.0, float(np.abs(want).max())))
            if not err <= REFERENCE_RTOL:
                raise InputError(
                    f"the model's {name} on the {len(want)} reference inputs differ from the "
                    f"fit's by {err:.1e} of their largest magnitude (allowed "
                    f"{REFERENCE_RTOL:.0e}): {not_it}"
                )

    # ------------------------------------------------------------------ scoring
    def require_model(self) -> OnnxClassifier:
        """The classifier this guard was fitted with (an error for a feature-only guard)."""
        self._fitted()
        if self.model_ is None:
            raise NotFittedError("this Guard has no model: use score_features(features)")
        return self.model_

    def score(self, x: np.ndarray, *, sphere: bool = True) -> Scores:
        """Run the model on inputs ``x`` and score their features (``sphere`` as in
        :meth:`score_features`)."""
        model = self.require_model()
        logits, feats = model.run(x, batch_size=self.batch_size, progress=self.progress)
        return self.score_features(feats, logits, sphere=sphere)

    def score_features(
        self, features: np.ndarray, logits: np.ndarray | None = None, *, sphere: bool = True
    ) -> Scores:
        """Geometry of feature vectors (N, f); ``logits`` default to ``features W^T + b``.
        ``sphere=False`` skips the spherical hull's distance where the OOD score does not read
        it (one certified hull query of about four per input; the server asks for it only
        when a request names its outputs): ``sphere_upper`` and ``sphere_lower`` are then NaN
        and ``sphere_converged`` False; every other field is the same."""
        self._fitted()
        F = np.asarray(features)
        f = self.W_.shape[1]
        if F.dtype.kind != "f" or F.ndim != 2 or F.shape[1] != f or F.shape[0] == 0:
            raise InputError(
                f"expected float features of shape (N, {f}) with N >= 1, got {F.dtype} {F.shape}"
            )
        if not np.all(np.isfinite(F)):
            raise InputError("features contain NaN or Inf")
        s, ev = self._geometry(F, logits, self.ood_, sphere)
        if self.ood_ is None:
            return s
        ood_score, p_value = self.ood_.score(ev)
        return dataclasses.replace(s, ood_score=ood_score, p_value=p_value)

    def _geometry(
        self, F: np.ndarray, logits: np.ndarray | None, ood: CombinedScore | None, sphere: bool
    ) -> tuple[Scores, Evidence]:
        """The scores of features ``F`` (without ``ood_score`` and ``p_value``: NaN; the
        spherical hull's only with ``sphere`` or when ``ood`` reads it) and what the OOD score
        ``ood`` reads of them, the distances to its hulls included."""
        sphere = sphere or (ood is not None and SphereHullDistance.name in ood.names)
        if logits is None:
            logits = (F.astype(np.float64) @ self.W_.T + self.b_).astype(np.float32)
        regions = self.regions_  # (built on first use: here, not in a worker thread)
        views = {} if ood is None else ood.hull_views()
        # The raw and the spherical hull and the OOD score's hulls share their passes over the
        # training features, and the union's products come with the first (on up to 2 threads:
        # the hulls split between them, one half of the rows per pass); the margins beside
        # them. The results do not depend on threads.
        threads = resolve_jobs(self.n_jobs)
        (h, sph, vs, r), m = run_tasks(
            [
                lambda: self.hulls_.query_all(
                    F,
                    regions,
                    list(views.values()),
                    sphere=sphere,
                    top_support=self.top_support,
                    threads=threads,
                    progress=self.progress,
                ),
                lambda: compute_margins(F, self.W_, self.b_, self.nonneg_, progress=self.progress),
            ],
            self.n_jobs,
        )
        assert r is not None
        nan = np.full(len(F), np.nan)
        sph_upper = nan if sph is None else sph.upper
        ev = Evidence(
            features=F,
            logits=logits,
            hull=h.upper,
            d_min=m.d_min,
            margins=m.margins,
            sphere=None if sph is None else sph.upper,
            hulls={name: v.upper for name, v in zip(views, vs, strict=True)},
        )
        scores = Scores(
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
            sphere_upper=sph_upper,
            sphere_lower=nan if sph is None else sph.lower,
            sphere_converged=np.zeros(len(F), bool) if sph is None else sph.converged,
            ood_score=nan,
            p_value=nan,
            in_union=r.in_union,
            n_balls=r.n_balls,
            union_slack=r.slack,
            support_idx=np.where(
                h.support_idx >= 0, self.train_index_[np.maximum(h.support_idx, 0)], -1
            ),
            support_alpha=h.support_alpha,
        )
        return scores, ev

    def decide(self, scores: Scores) -> Decisions:
        """Abstain / flag decisions for scores, with the fitted thresholds."""
        return decide(scores, self._fitted().thresholds_)


# ---------------------------------------------------------------------- state validation
_CPU = "CPUExecutionProvider"


def _cpu(model: OnnxClassifier) -> OnnxClassifier:
    """``model``, or the same model on onnxruntime's CPU provider when it runs elsewhere (the
    reference outputs are always computed on the CPU: deterministic, no TF32)."""
    if list(model.providers) == [_CPU]:
        return model
    return OnnxClassifier(model.data, providers=[_CPU])


def _combined_score(arrays: dict[str, np.ndarray], train_features: np.ndarray) -> CombinedScore:
    """The OOD score of a state: corrupt arrays fail in many ways, all an InputError here."""
    try:
        return CombinedScore.from_arrays(arrays, train_features)
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure means the arrays are not a score's
        raise InputError(
            f"not a guard state: the OOD score's arrays are corrupt ({type(exc).__name__}: {exc})"
        ) from None


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    """A finite JSON number (not a bool)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _rate(v: Any) -> bool:
    return _is_number(v) and 0 < v < 1


# The constructor's settings as a state holds them: (valid, what is expected).
_PARAM_CHECKS: dict[str, tuple[Any, str]] = {
    "nonneg": (lambda v: v is None or isinstance(v, bool), "true, false or null"),
    "hull_k": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "hull_tol": (lambda v: _is_number(v) and v > 0, "a number > 0"),
    "hull_max_rounds": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "top_support": (lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
    "batch_size": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "calib_fraction": (lambda v: _is_number(v) and 0 <= v < 1, "a number in [0, 1)"),
    "target_abstain_rate": (_rate, "a number in (0, 1)"),
    "target_flag_rate": (_rate, "a number in (0, 1)"),
    "ambiguity_threshold": (_is_number, "a finite number"),
    "seed": (lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
    "ood": (lambda v: isinstance(v, bool), "true or false"),
}
_THRESHOLD_CHECKS: dict[str, tuple[Any, str]] = {
    "ambiguity": (_is_number, "a finite number"),
    "hull": (lambda v: v is None or (_is_number(v) and v >= 0), "a number >= 0 or null"),
    "d_min": (lambda v: _is_number(v) and v >= 0, "a number >= 0"),
    "target_abstain_rate": (lambda v: v is None or _rate(v), "a number in (0, 1) or null"),
    "target_flag_rate": (lambda v: v is None or _rate(v), "a number in (0, 1) or null"),
    "n_calib": (lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
}


def _check_keys(what: str, d: Any, required: tuple[str, ...], optional: tuple[str, ...]) -> None:
    if not isinstance(d, dict):
        raise InputError(f"not a guard state: {what} is {type(d).__name__}, expected a dict")
    missing = [k for k in required if k not in d]
    unknown = sorted(str(k) for k in d if k not in required and k not in optional)
    if missing or unknown:
        raise InputError(f"not a guard state: {what} lacks {missing}, has unknown {unknown}")


def _check_fields(what: str, d: dict, checks: dict[str, tuple[Any, str]]) -> None:
    for name, (ok, expected) in checks.items():
        if not ok(d[name]):
            raise InputError(f"{what}.{name}: expected {expected}, got {d[name]!r}")


def _describe(a: Any) -> str:
    if isinstance(a, np.ndarray):
        return f"{a.dtype} array of shape {a.shape}"
    return type(a).__name__


def check_state(state: GuardState) -> None:
    """InputError (one line, naming the field) unless ``state`` is exactly what
    :meth:`Guard.to_state` writes: every setting, fitted scalar and array present, of its type,
    dtype, shape and range, and consistent with the others (class names one per class, labels
    and predictions class indices, radii >= 0, the thresholds those of the calibration scores
    at the stored rates, the Lipschitz constant that of ``W``, ...)."""
    if not isinstance(state, GuardState):
        raise InputError(f"not a guard state: {type(state).__name__}")
    p, fit, a = state.params, state.fitted, state.arrays
    _check_keys("params", p, _PARAMS, ())
    _check_fields("params", p, _PARAM_CHECKS)
    _check_keys("fitted", fit, _FITTED, ())
    optional = tuple(k for k in _ARRAYS if k not in _REQUIRED_ARRAYS)
    _check_keys("arrays", a, _REQUIRED_ARRAYS, optional)
    for name, arr in a.items():
        if not isinstance(arr, np.ndarray) or arr.dtype != _ARRAYS[name]:
            raise InputError(
                f"array {name}: expected {np.dtype(_ARRAYS[name])}, got {_describe(arr)}"
            )
    for group in (_CALIB_ARRAYS, _REFERENCE_ARRAYS):
        have = [k for k in group if k in a]
        if have and len(have) != len(group):
            raise InputError(
                f"not a guard state: arrays {have} without {sorted(set(group) - set(have))}"
            )

    # shapes: n classes, f features, N training points, M calibration scores, R references
    W = a["W"]
    if W.ndim != 2 or 0 in W.shape:
        raise InputError(f"array W: expected shape (n, f) with n, f >= 1, got {W.shape}")
    n, f = W.shape
    F = a["train_features"]
    N = F.shape[0] if F.ndim == 2 and F.shape[0] >= 1 else -1
    M = a["calib_hull"].shape[0] if "calib_hull" in a and a["calib_hull"].ndim == 1 else -1
    R = -1
    if "reference_inputs" in a and a["reference_inputs"].ndim >= 2:
        R = a["reference_inputs"].shape[0] if a["reference_inputs"].shape[0] >= 1 else -1
    shapes: dict[str, tuple[int, ...]] = {
        "b": (n,),
        "train_features": (N, f),
        "radii": (N,),
        "train_pred": (N,),
        "train_index": (N,),
        "train_labels": (N,),
        "calib_hull": (M,),
        "calib_d_min": (M,),
        "calib_ambiguity": (M,),
        "reference_logits": (R, n),
        "reference_features": (R, f),
    }
    for name, shape in shapes.items():
        if name in a and (a[name].shape != shape or -1 in shape):
            want = str(shape).replace("-1", "k >= 1")
            raise InputError(
                f"array {name}: expected shape {want} (W is {W.shape}), got {a[name].shape}"
            )
    if "reference_inputs" in a and R < 1:
        raise InputError(
            f"array reference_inputs: expected shape (R, ...) with R >= 1, got "
            f"{a['reference_inputs'].shape}"
        )

    # values
    for name in ("W", "b", "train_features", *_REFERENCE_ARRAYS):
        if name in a and not np.isfinite(a[name]).all():
            raise InputError(f"array {name}: contains NaN or Inf")
    radii = a["radii"]
    if not ((radii >= 0) & (radii <= _BIG_RADIUS)).all():
        raise InputError(f"array radii: expected values in [0, {_BIG_RADIUS:g}]")
    for name in ("train_pred", "train_labels"):
        if name in a and not ((a[name] >= 0) & (a[name] < n)).all():
            raise InputError(f"array {name}: expected class indices in 0..{n - 1}")
    idx = a["train_index"]
    if idx[0] < 0 or not (np.diff(idx) > 0).all():
        raise InputError("array train_index: expected increasing indices >= 0")
    if M >= 1:
        if not (np.isfinite(a["calib_hull"]) & (a["calib_hull"] >= 0)).all():
            raise InputError("array calib_hull: expected finite values >= 0")
        for name in ("calib_d_min", "calib_ambiguity"):
            if np.isnan(a[name]).any():
                raise InputError(f"array {name}: contains NaN")

    # fitted scalars
    names = fit["class_names"]
    if not isinstance(names, list) or not all(isinstance(c, str) for c in names):
        raise InputError(f"fitted.class_names: expected a list of strings, got {names!r}")
    if len(names) != n:
        raise InputError(
            f"fitted.class_names: expected {n} names (one per class), got {len(names)}"
        )
    nonneg = fit["nonneg"]
    if not isinstance(nonneg, bool) or (p["nonneg"] is not None and nonneg != p["nonneg"]):
        raise InputError(
            f"fitted.nonneg: expected true or false (equal to params.nonneg {p['nonneg']} when "
            f"that is set), got {nonneg!r}"
        )
    lip = fit["lipschitz"]
    if not (_is_number(lip) and math.isclose(lip, lipschitz_constant(W), rel_tol=1e-9)):
        raise InputError(
            f"fitted.lipschitz: expected the largest singular value of W, "
            f"{lipschitz_constant(W)!r}, got {lip!r}"
        )
    err = fit["affine_error"]
    fitted_on_model = "reference_inputs" in a
    if not (err is None if not fitted_on_model else _is_number(err) and err >= 0):
        raise InputError(
            "fitted.affine_error: expected "
            + ("a number >= 0 (fitted with a model)" if fitted_on_model else "null (no model)")
            + f", got {err!r}"
        )
    t = fit["thresholds"]
    _check_keys("fitted.thresholds", t, tuple(_THRESHOLD_CHECKS), ())
    _check_fields("fitted.thresholds", t, _THRESHOLD_CHECKS)
    if M >= 1:
        expected = calibrate(
            a["calib_hull"],
            a["calib_d_min"],
            abstain_rate=p["target_abstain_rate"],
            flag_rate=p["target_flag_rate"],
            ambiguity=p["ambiguity_threshold"],
        )
    else:
        expected = Thresholds(ambiguity=float(p["ambiguity_threshold"]))
    stored, derived = Thresholds.from_dict(t).to_dict(), expected.to_dict()
    # the settings first: an edited rate is named as such, not as the threshold it moves
    for key in ("target_abstain_rate", "target_flag_rate", "ambiguity", "n_calib", "hull", "d_min"):
        if stored[key] != derived[key]:
            raise InputError(
                f"fitted.thresholds.{key}: expected {derived[key]!r} (from the {max(M, 0)} "
                f"calibration scores and params), got {stored[key]!r}"
            )

    # the OOD score: present exactly when it was fitted (calibration data and params.ood)
    if (state.ood is not None) != (p["ood"] and M >= 1):
        raise InputError(
            f"not a guard state: the OOD score is "
            f"{'present' if state.ood is not None else 'absent'} with params.ood={p['ood']} "
            f"and {max(M, 0)} calibration scores"
        )
    if state.ood is not None:
        if not isinstance(state.ood, dict) or not all(
            isinstance(k, str) and isinstance(v, np.ndarray) for k, v in state.ood.items()
        ):
            raise InputError("not a guard state: ood must map names to arrays")
