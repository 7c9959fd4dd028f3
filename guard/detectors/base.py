"""What every out-of-distribution detector reads (:class:`Evidence`) and the one API they share
(:class:`Detector`): fit on in-distribution training features and the final affine layer, then
score.

Every detector needs only what the guard itself has: training features ``(N, f)``, their labels
and the final layer ``logits = features W^T + b`` (``W`` (n, f), ``b`` (n,)); the geometric ones
also read the guard's geometry of the inputs (exact margins, eq. 7-12; certified hull distance,
eq. 20-25), which the caller that owns a :class:`~guard.estimator.Guard` passes in as
:class:`Evidence`. Scores follow the `pytorch-ood` convention: an *outlier* score, HIGHER = more
out-of-distribution (the papers' confidence scores are negated).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, ClassVar, TypeVar

import numpy as np

from ..errors import InputError, NotFittedError
from ..types import Scores

__all__ = ["Detector", "Evidence"]

D = TypeVar("D", bound="Detector")

#: Rank of each Evidence field: (N, f) / (N, n) matrices and (N,) vectors.
_NDIM = {"features": 2, "logits": 2, "margins": 2, "hull": 1, "d_min": 1, "sphere": 1}


@dataclass(frozen=True)
class Evidence:
    """What a detector may read about N inputs (any field may be ``None`` if nobody reads it).

    Attributes:
        features: (N, f) penultimate features.
        logits: (N, n) logits; a detector that reads them and finds ``None`` uses
            ``features W^T + b``.
        margins: (N, n) exact distances to every decision boundary (``Scores.margins``): NaN at
            the predicted class, ``inf`` where the boundary cannot be reached.
        hull: (N,) certified upper bound of the distance to the training hull
            (``Scores.hull_upper``).
        d_min: (N,) distance to the nearest decision boundary (``Scores.d_min``).
        sphere: (N,) certified upper bound of the distance of the L2-normalised features to
            the hull of the L2-normalised training features (``Scores.sphere_upper``).
        hulls: (N,) certified upper bounds of hull distances that detectors asked the guard for
            (their ``hull_view``, computed in the guard's shared passes), by detector name; a
            detector whose name is missing queries its own view.
    """

    features: np.ndarray | None = None
    logits: np.ndarray | None = None
    margins: np.ndarray | None = None
    hull: np.ndarray | None = None
    d_min: np.ndarray | None = None
    sphere: np.ndarray | None = None
    hulls: Mapping[str, np.ndarray] | None = None

    def __post_init__(self) -> None:
        rows = set()
        if self.hulls is not None:
            if not isinstance(self.hulls, Mapping):
                raise InputError(
                    f"expected Evidence.hulls: a mapping of names to (N,) arrays, got "
                    f"{type(self.hulls).__name__}"
                )
            hulls = {str(k): np.asarray(v) for k, v in self.hulls.items()}
            for k, v in hulls.items():
                if v.ndim != 1:
                    raise InputError(f"expected Evidence.hulls[{k!r}] of shape (N,), got {v.shape}")
                rows.add(v.shape[0])
            object.__setattr__(self, "hulls", hulls)
        for name, ndim in _NDIM.items():
            a = getattr(self, name)
            if a is None:
                continue
            a = np.asarray(a)
            if a.ndim != ndim:
                want = "(N,)" if ndim == 1 else "(N, n)" if name != "features" else "(N, f)"
                raise InputError(f"expected Evidence.{name} of shape {want}, got {a.shape}")
            object.__setattr__(self, name, a)
            rows.add(a.shape[0])
        if len(rows) > 1:
            shapes = {
                f.name: getattr(self, f.name).shape
                for f in fields(self)
                if getattr(self, f.name) is not None and f.name != "hulls"
            }
            shapes.update({f"hulls[{k!r}]": v.shape for k, v in (self.hulls or {}).items()})
            raise InputError(f"Evidence fields differ in their number of rows: {shapes}")

    @classmethod
    def from_scores(cls, scores: Scores, features: np.ndarray | None = None) -> Evidence:
        """The guard's geometry of N inputs (:class:`~guard.types.Scores`) with their features
        (N, f) (``None``: only detectors that read no features can use it)."""
        return cls(
            features=features,
            logits=scores.logits,
            margins=scores.margins,
            hull=scores.hull_upper,
            d_min=scores.d_min,
            sphere=scores.sphere_upper,
        )

    def take(self, idx: np.ndarray) -> Evidence:
        """The rows ``idx`` of every field that is present."""
        out: dict[str, Any] = {
            f.name: None if getattr(self, f.name) is None else getattr(self, f.name)[idx]
            for f in fields(self)
            if f.name != "hulls"
        }
        if self.hulls is not None:
            out["hulls"] = {k: v[idx] for k, v in self.hulls.items()}
        return Evidence(**out)

    def __len__(self) -> int:
        for f in fields(self):
            a = getattr(self, f.name)
            if a is not None and f.name != "hulls":
                return int(a.shape[0])
        for v in (self.hulls or {}).values():
            return int(v.shape[0])
        return 0


def as_features(features: Any, f: int | None = None, what: str = "features") -> np.ndarray:
    """``features`` as an (N, f) array of its own float dtype (no copy), or an InputError."""
    F = np.asarray(features)
    if F.dtype.kind not in "fiu":
        raise InputError(f"expected numeric {what}, got dtype {F.dtype}")
    if F.ndim != 2 or (f is not None and F.shape[1] != f):
        want = "(N, f)" if f is None else f"(N, {f})"
        raise InputError(f"expected {what} of shape {want}, got {F.shape}")
    if not np.all(np.isfinite(F)):
        raise InputError(f"{what} contain NaN or Inf")
    return F


class Detector:
    """Base class of the detectors: validates, stores the final layer, persists.

    Subclasses set ``name``, ``needs`` (the :class:`Evidence` fields they read; ``logits`` may be
    derived from ``features``), ``state`` (what ``_fit`` learns beyond ``W_`` and ``b_``, names
    ending in ``_``) and define ``_fit`` and ``_score``. ``__init__`` only stores settings.

    Attributes set by :meth:`fit`: ``W_`` (n, f) and ``b_`` (n,) float64.
    """

    name: ClassVar[str] = "detector"
    needs: tuple[str, ...] = ("features",)
    state: ClassVar[tuple[str, ...]] = ()

    # ------------------------------------------------------------------ fitting
    def fit(
        self: D,
        train_features: np.ndarray,
        train_labels: np.ndarray | None,
        W: np.ndarray,
        b: np.ndarray,
    ) -> D:
        """Fit on in-distribution training features (N, f), integer labels (N,) (``None``: the
        model's predictions) and the final layer ``W`` (n, f), ``b`` (n,)."""
        W = np.asarray(W, dtype=np.float64)
        b = np.asarray(b, dtype=np.float64).reshape(-1)
        if W.ndim != 2 or b.shape != (W.shape[0],):
            raise InputError(f"expected W (n, f) and b (n,), got {W.shape}, {b.shape}")
        F = as_features(train_features, W.shape[1], "training features")
        if F.shape[0] == 0:
            raise InputError("expected at least one training feature vector")
        y = None
        if train_labels is not None:
            y = np.asarray(train_labels).reshape(-1)
            if y.shape[0] != F.shape[0] or y.dtype.kind not in "iu":
                raise InputError(
                    f"expected integer labels of shape ({F.shape[0]},), got {y.dtype} {y.shape}"
                )
        self.W_, self.b_ = W, b
        self._fit(F, y)
        return self

    def _fit(self, F: np.ndarray, y: np.ndarray | None) -> None:  # noqa: B027 - optional hook
        """Fit what the score needs beyond ``W_`` and ``b_`` (``F`` keeps its dtype)."""

    def _labels(self, F: np.ndarray, y: np.ndarray | None) -> np.ndarray:
        """``y``, or the model's predictions on ``F`` when there are no labels."""
        return np.argmax(F @ self.W_.T + self.b_, axis=1) if y is None else y

    def _check(self) -> None:
        if not hasattr(self, "W_"):
            raise NotFittedError(
                f"this {type(self).__name__} is not fitted: call "
                f"fit(train_features, train_labels, W, b) or from_arrays(...)"
            )

    # ------------------------------------------------------------------ scoring
    def score(
        self, evidence: Evidence | np.ndarray, logits: np.ndarray | None = None
    ) -> np.ndarray:
        """Outlier scores (N,) float64, higher = more out-of-distribution.

        Args:
            evidence: :class:`Evidence` of N inputs, or their features (N, f).
            logits: (N, n) logits with features given as an array (default ``features W^T + b``).
        """
        self._check()
        if isinstance(evidence, Evidence):
            if logits is not None:
                raise InputError("pass logits inside the Evidence, not beside it")
            ev = evidence
        elif isinstance(evidence, (np.ndarray, list)):
            ev = Evidence(features=evidence, logits=logits)
        else:
            raise InputError(
                f"expected Evidence or features (N, f), got {type(evidence).__name__}"
                f" (a guard's Scores: Evidence.from_scores(scores, features))"
            )
        return np.asarray(self._score(ev), dtype=np.float64)

    def _score(self, ev: Evidence) -> np.ndarray:
        raise NotImplementedError

    def _read(self, ev: Evidence, field: str) -> np.ndarray:
        """Evidence field ``field`` as float64 of this detector's shape, or an InputError."""
        a = getattr(ev, field)
        if a is None:
            if field == "logits" and ev.features is not None:
                return self._read(ev, "features") @ self.W_.T + self.b_
            hint = (
                ""
                if field == "features"
                else " (the guard's geometry: Evidence.from_scores(guard.score_features(x), x))"
            )
            raise InputError(f"{type(self).__name__} reads Evidence.{field}, got None{hint}")
        n, f = self.W_.shape
        want = {"features": (f,), "logits": (n,), "margins": (n,)}.get(field, ())
        if a.shape[1:] != want:
            shape = f"(N, {want[0]})" if want else "(N,)"
            raise InputError(f"expected Evidence.{field} of shape {shape}, got {a.shape}")
        x = np.asarray(a, dtype=np.float64)
        if field == "features" and not np.all(np.isfinite(x)):
            raise InputError("features contain NaN or Inf")
        return x

    # ------------------------------------------------------------------ persistence
    def get_params(self) -> dict[str, Any]:
        """The settings ``__init__`` stored (JSON-able)."""
        return {
            k: v
            for k, v in vars(self).items()
            if not k.endswith("_") and not k.startswith("_") and k != "needs"
        }

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Everything fitted as numpy arrays (scalars 0-d, settings a JSON string under
        ``"params"``): ``np.savez`` / ``np.load(allow_pickle=False)`` round-trip it bit for bit."""
        self._check()
        out = {"params": np.array(json.dumps(self.get_params()))}
        for attr in ("W_", "b_", *self.state):
            out[attr.rstrip("_")] = np.asarray(getattr(self, attr))
        return out

    @classmethod
    def from_arrays(cls: type[D], arrays: Mapping[str, np.ndarray]) -> D:
        """The detector :meth:`to_arrays` wrote, exactly."""
        try:
            self = cls(**json.loads(str(np.asarray(arrays["params"]))))
            for attr in ("W_", "b_", *cls.state):
                a = np.array(arrays[attr.rstrip("_")])
                setattr(self, attr, a.item() if a.ndim == 0 else a)
        except (KeyError, TypeError, ValueError) as err:
            if isinstance(err, InputError):
                raise
            raise InputError(f"not the arrays of a {cls.__name__}: missing or bad {err}") from err
        return self

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({params})"
