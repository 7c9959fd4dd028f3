"""Out-of-distribution peers of the guard, computed from the same penultimate features.

Every detector needs only what the guard itself has: training features ``(N, f)``, their labels,
and the final affine layer ``logits = features W^T + b`` (``W`` is ``(n, f)``, ``b`` is ``(n,)``).
The interface follows scikit-learn::

    det = REGISTRY["knn"]().fit(train_features, train_labels, W, b)
    s = det.score(features, logits)          # (N,) float64, HIGHER = more out-of-distribution

``logits`` may be omitted (then ``features W^T + b``). All detectors use the convention of the
`pytorch-ood` package: the score is an *outlier* score, so confidence scores of the papers are
negated.

=================  =========================================================================
name               score (higher = more OOD)
=================  =========================================================================
``msp``            ``-max softmax(logits)`` (Hendrycks & Gimpel 2017)
``energy``         ``-T logsumexp(logits / T)``, T = 1 (Liu et al. 2020)
``mahalanobis``    ``min_c (x - mu_c)^T S^+ (x - mu_c)`` with class means ``mu_c`` and one shared
                   covariance ``S`` (Lee et al. 2018; squared distance, no input pre-processing)
``knn``            distance to the k-th nearest training feature after L2 normalisation, k = 50
                   (Sun et al. 2022), exact FAISS search
``vim``            ``alpha ||P_res (x - u)|| - logsumexp(logits)``, ``u = -W^+ b`` (Wang et al.
                   2022)
``fdbd``           ``-mean_{j != pred} |(w_i - w_j).x + b_i - b_j| / ||w_i - w_j|| / ||x - mu||``
                   (Liu & Qin 2024)
``ambiguity``      ``hull distance - d_min``: the paper's raw ambiguity ``d_min - d_hull``
                   negated (needs the guard's geometry)
``hull``           the certified distance to the training hull alone (upper bound)
=================  =========================================================================

The guard-based scores (``ambiguity``, ``hull``) fit a :class:`~guard.estimator.Guard` on the training
features unless one is given, and also accept an existing :class:`~guard.types.Scores` object (or
the arrays) instead of features, so the expensive geometry is computed once.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from scipy.special import logsumexp, softmax

from .errors import InputError, NotFittedError

__all__ = [
    "REGISTRY",
    "Ambiguity",
    "Detector",
    "Energy",
    "FDBD",
    "HullDistance",
    "KNN",
    "MSP",
    "Mahalanobis",
    "ViM",
    "make",
]


def _as_features(features: Any, f: int | None = None) -> np.ndarray:
    F = np.asarray(features, dtype=np.float64)
    if F.ndim != 2 or (f is not None and F.shape[1] != f):
        want = "(N, f)" if f is None else f"(N, {f})"
        raise InputError(f"expected features of shape {want}, got {F.shape}")
    if not np.all(np.isfinite(F)):
        raise InputError("features contain NaN or Inf")
    return F


class Detector:
    """Base class: stores the final layer; subclasses add what they fit and define ``_score``.

    Attributes set by :meth:`fit`: ``W_`` (n, f) and ``b_`` (n,) float64.
    """

    name = "detector"
    #: True for scores that need the guard's geometry (hull distance, margins).
    needs_guard = False

    def fit(
        self,
        train_features: np.ndarray,
        train_labels: np.ndarray | None,
        W: np.ndarray,
        b: np.ndarray,
    ) -> Detector:
        """Fit on in-distribution training features (N, f), labels (N,) (or ``None``), ``W``, ``b``."""
        F = _as_features(train_features)
        W = np.asarray(W, dtype=np.float64)
        b = np.asarray(b, dtype=np.float64).reshape(-1)
        if W.ndim != 2 or W.shape[1] != F.shape[1] or b.shape != (W.shape[0],):
            raise InputError(f"expected W (n, {F.shape[1]}) and b (n,), got {W.shape}, {b.shape}")
        if F.shape[0] == 0:
            raise InputError("expected at least one training feature vector")
        y = None
        if train_labels is not None:
            y = np.asarray(train_labels).reshape(-1)
            if y.shape[0] != F.shape[0] or y.dtype.kind not in "iu":
                raise InputError(f"expected integer labels of shape ({F.shape[0]},), got "
                                 f"{y.dtype} {y.shape}")
            y = y.astype(np.int64)
        self.W_, self.b_ = W, b
        self._fit(F, y)
        return self

    def _fit(self, F: np.ndarray, y: np.ndarray | None) -> None:  # noqa: B027 - optional hook
        """Fit what the score needs beyond ``W_`` and ``b_``."""

    def _check(self) -> None:
        if not hasattr(self, "W_"):
            raise NotFittedError(f"this {type(self).__name__} is not fitted: call fit(...) first")

    def logits(self, features: np.ndarray) -> np.ndarray:
        """``features W^T + b`` in float64."""
        self._check()
        return _as_features(features, self.W_.shape[1]) @ self.W_.T + self.b_

    def score(self, features: np.ndarray, logits: np.ndarray | None = None) -> np.ndarray:
        """Outlier scores (N,) float64 of features (N, f); higher = more out-of-distribution."""
        self._check()
        F = _as_features(features, self.W_.shape[1])
        if logits is None:
            Z = F @ self.W_.T + self.b_
        else:
            Z = np.asarray(logits, dtype=np.float64)
            if Z.shape != (F.shape[0], self.W_.shape[0]):
                raise InputError(f"expected logits of shape {(F.shape[0], self.W_.shape[0])}, "
                                 f"got {Z.shape}")
        return np.asarray(self._score(F, Z), dtype=np.float64)

    def _score(self, F: np.ndarray, Z: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def __repr__(self) -> str:
        params = {k: v for k, v in vars(self).items() if not k.endswith("_") and not k.startswith("_")}
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in params.items())})"


class MSP(Detector):
    """Maximum softmax probability (Hendrycks & Gimpel, ICLR 2017): score ``-max softmax(z / T)``."""

    name = "msp"

    def __init__(self, temperature: float = 1.0) -> None:
        self.temperature = float(temperature)

    def _score(self, F: np.ndarray, Z: np.ndarray) -> np.ndarray:
        return -softmax(Z / self.temperature, axis=1).max(axis=1)


class Energy(Detector):
    """Energy score (Liu et al., NeurIPS 2020): ``E(x) = -T logsumexp(z / T)``; T = 1."""

    name = "energy"

    def __init__(self, temperature: float = 1.0) -> None:
        self.temperature = float(temperature)

    def _score(self, F: np.ndarray, Z: np.ndarray) -> np.ndarray:
        T = self.temperature
        return -T * logsumexp(Z / T, axis=1)


class Mahalanobis(Detector):
    """Class-conditional Gaussians with one shared covariance (Lee et al., NeurIPS 2018).

    Fit: class means ``mu_c`` and the shared (within-class, MLE) covariance
    ``S = 1/N sum_c sum_{i in c} (x_i - mu_c)(x_i - mu_c)^T`` in float64, plus ``ridge * mean
    diagonal`` on the diagonal, inverted with a pseudo-inverse (robust to dead ReLU features).
    Score: ``min_c (x - mu_c)^T S^+ (x - mu_c)``, the squared distance to the closest class
    (the paper's confidence score is its negative; pytorch-ood reports half of it with an
    unnormalised covariance: the same ranking). The layer-ensemble and input pre-processing of the
    paper are not used: only the penultimate layer is available.

    Labels are required in principle; without them the model's predictions are used.
    """

    name = "mahalanobis"

    def __init__(self, ridge: float = 1e-8) -> None:
        self.ridge = float(ridge)

    def _fit(self, F: np.ndarray, y: np.ndarray | None) -> None:
        if y is None:
            y = np.argmax(F @ self.W_.T + self.b_, axis=1)
        classes = np.unique(y)
        self.classes_ = classes
        self.means_ = np.stack([F[y == c].mean(axis=0) for c in classes])
        R = F - self.means_[np.searchsorted(classes, y)]
        cov = R.T @ R / F.shape[0]
        cov += np.eye(cov.shape[0]) * self.ridge * max(float(np.trace(cov)) / cov.shape[0], 1e-300)
        self.covariance_ = cov
        self.precision_ = np.linalg.pinv(cov, hermitian=True)

    def _score(self, F: np.ndarray, Z: np.ndarray) -> np.ndarray:
        best = np.full(F.shape[0], np.inf)
        for mu in self.means_:  # centred per class: no cancellation when S has tiny eigenvalues
            D = F - mu
            np.minimum(best, np.einsum("ij,ij->i", D @ self.precision_, D), out=best)
        return np.maximum(best, 0.0)


def _normalise(F: np.ndarray, eps: float = 1e-10) -> np.ndarray:
    return F / (np.linalg.norm(F, axis=1, keepdims=True) + eps)


class KNN(Detector):
    """Deep nearest neighbours (Sun et al., ICML 2022).

    Features are L2-normalised (an all-zero feature vector stays zero); the score is the Euclidean
    distance to the ``k``-th nearest normalised training feature (k = 50 as in the paper for
    CIFAR-10; ``k`` is capped at the number of training points). Exact search with a FAISS
    ``IndexFlatL2``.
    """

    name = "knn"

    def __init__(self, k: int = 50) -> None:
        if k < 1:
            raise InputError(f"k must be >= 1, got {k}")
        self.k = int(k)

    def _fit(self, F: np.ndarray, y: np.ndarray | None) -> None:
        import faiss

        Fn = np.ascontiguousarray(_normalise(F), dtype=np.float32)
        self.index_ = faiss.IndexFlatL2(Fn.shape[1])
        self.index_.add(Fn)
        self.k_ = min(self.k, Fn.shape[0])

    def _score(self, F: np.ndarray, Z: np.ndarray) -> np.ndarray:
        Q = np.ascontiguousarray(_normalise(F), dtype=np.float32)
        d2, _ = self.index_.search(Q, self.k_)
        return np.sqrt(np.maximum(d2[:, self.k_ - 1].astype(np.float64), 0.0))


class ViM(Detector):
    """Virtual-logit matching (Wang et al., CVPR 2022), as in the authors' code.

    Origin ``u = -pinv(W) b`` (the point whose logits are zero in the least-squares sense);
    ``S = 1/N sum (x_i - u)(x_i - u)^T``; the principal subspace is spanned by the eigenvectors of
    its ``principal_dim`` largest eigenvalues, the residual space by the rest. With the residual
    norm ``r(x) = ||P_res (x - u)||`` and ``alpha = mean_train max logit / mean_train r``, the
    virtual logit is ``alpha r(x)`` and the OOD score is ``alpha r(x) - logsumexp(logits)`` (the
    negated ID score ``energy - vlogit`` of the paper's code; the paper's softmax of the virtual
    logit ranks inputs the same way).

    ``principal_dim``: the paper uses D = 1000 for 2048-d and 512 for 768-d features (about half
    the width, and more than the number of classes). Default ``None`` = ``f // 2`` (32 for the
    default model's 64 features, which is above its 10 classes).
    """

    name = "vim"

    def __init__(self, principal_dim: int | None = None) -> None:
        self.principal_dim = principal_dim

    def _fit(self, F: np.ndarray, y: np.ndarray | None) -> None:
        f = F.shape[1]
        d = f // 2 if self.principal_dim is None else int(self.principal_dim)
        if not 0 < d < f:
            raise InputError(f"principal_dim must be in 1..{f - 1}, got {d}")
        self.principal_dim_ = d
        self.u_ = -np.linalg.pinv(self.W_) @ self.b_
        X = F - self.u_
        cov = X.T @ X / X.shape[0]
        vals, vecs = np.linalg.eigh(cov)  # ascending
        self.residual_basis_ = np.ascontiguousarray(vecs[:, : f - d])  # smallest f - d
        r = np.linalg.norm(X @ self.residual_basis_, axis=1)
        max_logit = (F @ self.W_.T + self.b_).max(axis=1)
        self.alpha_ = float(max_logit.mean() / max(r.mean(), 1e-300))

    def residual(self, features: np.ndarray) -> np.ndarray:
        """``||P_res (x - u)||`` of features (N, f)."""
        self._check()
        F = _as_features(features, self.W_.shape[1])
        return np.linalg.norm((F - self.u_) @ self.residual_basis_, axis=1)

    def _score(self, F: np.ndarray, Z: np.ndarray) -> np.ndarray:
        vlogit = self.alpha_ * np.linalg.norm((F - self.u_) @ self.residual_basis_, axis=1)
        return vlogit - logsumexp(Z, axis=1)


class FDBD(Detector):
    """Fast decision-boundary-based detector (Liu & Qin, ICML 2024).

    For predicted class ``i`` the closed-form (unconstrained) distance to the boundary with class
    ``j`` is ``|z_i - z_j| / ||w_i - w_j||``; fDBD averages it over ``j != i`` and divides by the
    distance ``||x - mu||`` to the mean training feature. Higher fDBD = more in-distribution, so
    the OOD score is ``-fDBD``. (The authors' code sums over ``j``; the mean is the same score
    divided by ``n - 1``.)
    """

    name = "fdbd"

    def __init__(self, eps: float = 1e-8) -> None:
        self.eps = float(eps)

    def _fit(self, F: np.ndarray, y: np.ndarray | None) -> None:
        self.mean_ = F.mean(axis=0)
        W = self.W_
        denom = np.linalg.norm(W[:, None, :] - W[None, :, :], axis=2)  # (n, n)
        np.fill_diagonal(denom, 1.0)
        self.denominator_ = np.maximum(denom, 1e-300)

    def _score(self, F: np.ndarray, Z: np.ndarray) -> np.ndarray:
        n = Z.shape[1]
        pred = Z.argmax(axis=1)
        zi = Z[np.arange(len(Z)), pred]
        dist = np.abs(zi[:, None] - Z) / self.denominator_[pred]  # 0 at j = pred
        fdbd = dist.sum(axis=1) / (n - 1)
        fdbd /= np.maximum(np.linalg.norm(F - self.mean_, axis=1), self.eps)
        return -fdbd


# ---------------------------------------------------------------------- guard-based scores
def _scores_arrays(scores: Any) -> tuple[np.ndarray, np.ndarray]:
    """(d_min, hull_upper) from a Scores object, a mapping, or a (d_min, hull) pair."""
    if hasattr(scores, "d_min") and hasattr(scores, "hull_upper"):
        d_min, hull = scores.d_min, scores.hull_upper
    elif isinstance(scores, Mapping):
        d_min, hull = scores["d_min"], scores.get("hull_upper", scores.get("hull"))
        if hull is None:
            raise InputError("expected a mapping with 'd_min' and 'hull_upper' (or 'hull')")
    elif isinstance(scores, tuple) and len(scores) == 2:
        d_min, hull = scores
    else:
        raise InputError("expected a guard Scores object, a mapping with 'd_min' and "
                         "'hull_upper', or a (d_min, hull_distance) pair")
    d_min = np.asarray(d_min, dtype=np.float64).reshape(-1)
    hull = np.asarray(hull, dtype=np.float64).reshape(-1)
    if d_min.shape != hull.shape:
        raise InputError(f"d_min {d_min.shape} and hull distance {hull.shape} differ in shape")
    return d_min, hull


class _GuardScore(Detector):
    """A score read off the guard's geometry.

    Args:
        guard: a fitted :class:`~guard.estimator.Guard` to use (``fit`` then only records ``W``, ``b``);
            ``None``: ``fit`` fits ``Guard(calib_fraction=0, **guard_kwargs)`` on the features.

    ``score`` takes features (scored with the guard), or a :class:`~guard.types.Scores` object, a
    mapping with ``d_min`` and ``hull_upper``, or a ``(d_min, hull_distance)`` pair.
    """

    needs_guard = True

    def __init__(self, guard: Any = None, **guard_kwargs: Any) -> None:
        self.guard = guard
        self.guard_kwargs = guard_kwargs

    def _fit(self, F: np.ndarray, y: np.ndarray | None) -> None:
        if self.guard is None:
            from .estimator import Guard

            kw = {"calib_fraction": 0.0, **self.guard_kwargs}
            self.guard_ = Guard(**kw).fit_features(F.astype(np.float32), self.W_, self.b_, y)
        else:
            self.guard_ = self.guard

    def fit_guard(self, guard: Any) -> _GuardScore:
        """Use an already fitted guard (e.g. a loaded artifact) and its final layer."""
        guard._fitted()
        self.guard = self.guard_ = guard
        self.W_, self.b_ = np.asarray(guard.W_, np.float64), np.asarray(guard.b_, np.float64)
        return self

    def score(self, features: Any = None, logits: np.ndarray | None = None, *,
              scores: Any = None) -> np.ndarray:
        """Outlier scores (N,) from features (N, f) or from guard ``scores``."""
        if scores is None and features is not None and not isinstance(features, np.ndarray) \
                and not isinstance(features, list):
            scores, features = features, None  # a Scores object, mapping or pair given first
        if scores is None:
            if features is None:
                raise InputError("expected features or guard scores")
            self._check()
            F = np.asarray(features)
            if F.dtype.kind != "f":
                F = F.astype(np.float32)
            scores = self.guard_.score_features(F, logits)
        d_min, hull = _scores_arrays(scores)
        return self._from_arrays(d_min, hull)

    def _from_arrays(self, d_min: np.ndarray, hull: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class Ambiguity(_GuardScore):
    """The paper's raw ambiguity (eq. 26) as an OOD score: ``-(d_min - d_hull)``.

    Negative ambiguity (hull farther than the nearest boundary) = ambiguous; the paper abstains
    below 0, i.e. where this score is above 0.
    """

    name = "ambiguity"

    def _from_arrays(self, d_min: np.ndarray, hull: np.ndarray) -> np.ndarray:
        return hull - d_min


class HullDistance(_GuardScore):
    """The certified distance to the convex hull of the training features (upper bound)."""

    name = "hull"

    def _from_arrays(self, d_min: np.ndarray, hull: np.ndarray) -> np.ndarray:
        return hull.copy()


#: name -> detector class (construct with defaults: ``REGISTRY[name]()``).
REGISTRY: dict[str, type[Detector]] = {
    cls.name: cls for cls in (MSP, Energy, Mahalanobis, KNN, ViM, FDBD, Ambiguity, HullDistance)
}


def make(name: str, **kwargs: Any) -> Detector:
    """A detector by registry name, e.g. ``make("knn", k=50)``."""
    try:
        cls = REGISTRY[name]
    except KeyError:
        raise InputError(f"unknown detector {name!r}; choose from {sorted(REGISTRY)}") from None
    return cls(**kwargs)
