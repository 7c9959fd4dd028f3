"""The guard's out-of-distribution (abstain) score: geometry components combined on ID data only,
turned into a split-conformal p-value.

Components (each an *outlier* score, higher = more out-of-distribution; ``x`` the penultimate
feature vector, ``z = W x + b`` its logits, ``i`` the predicted class):

=================  =========================================================================
name               score
=================  =========================================================================
``hull``           certified distance to the convex hull of the training features (upper
                   bound, ``Scores.hull_upper``)
``fdbd``           ``-mean_{j != i} m_j(x) / ||x - med||``: the **exact** margins ``m_j`` to every
                   decision boundary (``Scores.margins``, eq. 7-12 of the paper) averaged and
                   divided by the distance to the coordinate-wise median ``med`` of the
                   training features. fDBD (Liu & Qin 2024) with the exact, constrained margins
                   in place of the hyperplane distances and a robust centre. A boundary that
                   cannot be reached (margin ``inf``) counts with its hyperplane distance
                   ``|z_i - z_j| / ||w_i - w_j||`` (a lower bound: conservative).
``mahalanobis``    ``min_c ||A^T (x - mu_c)||^2``, class means ``mu_c`` and the shared within-class
                   covariance ``S = A A^T``-whitened (``A = V diag(lambda)^-1/2`` over the
                   numerically nonzero eigenvalues: the pseudo-inverse of Lee et al. 2018)
``vim``            ``alpha ||P_res (x - u)|| - logsumexp(z)`` (Wang et al. 2022, as guard.peers)
``energy``         ``-logsumexp(z)``
``knn``            distance of the L2-normalised ``x`` to its ``knn_k``-th nearest neighbour among
                   a seeded random subsample (at most 10%) of the normalised training features
``feature_norm``   ``-||x||`` (small feature norm = unfamiliar input)
=================  =========================================================================

Fit (in-distribution data only; nothing is ever fitted on OOD inputs):

1. The components' own parameters come from the training features (and labels or predictions).
2. The held-out in-distribution calibration data is split at random (``seed``) into a *fit* part
   (``fit_fraction``, default half) and a *p-value* part.
3. On the fit part every component is mapped to a standard-normal scale by its empirical
   distribution (midrank ECDF, ``Phi^-1``, piecewise-linear between at most 257 quantile knots).
   Beyond the largest knot the map continues linearly with the slope of the upper tail
   (90th-99th percentile), so far-away inputs keep being ranked by how far away they are; below
   the smallest knot it is constant (being more typical than every calibration input in one
   component does not buy anything).
4. ``combine`` turns the vector of normal scores ``t`` into one score:

   * ``"min_variance"`` (default): ``w . (t - m) / sqrt(w' C w)`` where ``m``, ``C`` are the mean
     and covariance of ``t`` on the fit part and ``w`` minimises the ID variance ``w' C w`` over
     the simplex (``w >= 0``, ``sum w = 1``). Every component counts with a nonnegative weight
     (the score is monotone in each), and strongly correlated components (hull distance and
     Mahalanobis both measure distance from the data) share one vote instead of outvoting the
     rest. It maximises ``(1' w)^2 / w' C w`` among nonnegative weights: for OOD inputs shifted
     by the same amount in every component, the most powerful linear test under a Gaussian ID
     model of ``t``. Caveat: it favours components weakly correlated with the others whether or
     not they detect anything, so add only components that are OOD scores in their own right
     (``feature_norm`` and ``energy`` are weak here and lower the results when added).
   * ``"stouffer"``: equal weights. ``"fisher"``: ``sum_k -log(1 - Phi(t_k))``. ``"max"``:
     ``max_k t_k`` (a min-p rule).
5. The combined scores of the p-value part, which the combination was not fitted on, are stored
   sorted; ``p(x) = (1 + #{calibration scores >= s(x)}) / (n + 1)``. For an in-distribution
   input exchangeable with the calibration inputs ``P(p <= a) <= a`` for every ``a``
   (split conformal: Vovk et al. 2005; Angelopoulos & Bates 2021): abstaining where
   ``p <= a`` (or ``p < a``) keeps the false-abstain rate at most ``a``, and above
   ``a - 1/(n + 1)`` for continuous scores.

Scoring an input costs ``O(f^2 + n f)`` plus a few binary searches (and ``O(m f)`` for the optional
kNN subsample of ``m`` points): no scan over the training features.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy.special import logsumexp, ndtri
from scipy.stats import norm

from .errors import InputError, NotFittedError

__all__ = ["COMBINE", "COMPONENTS", "DEFAULT_COMPONENTS", "MIN_CALIB", "OODScorer"]

#: Components :class:`OODScorer` knows (see the module docstring).
COMPONENTS = ("hull", "fdbd", "mahalanobis", "vim", "energy", "knn", "feature_norm")
#: Combination rules.
COMBINE = ("min_variance", "stouffer", "fisher", "max")
#: The default: two geometry components of the guard and one cheap feature statistic.
DEFAULT_COMPONENTS = ("hull", "fdbd", "mahalanobis")
#: Fewest held-out in-distribution calibration inputs ``fit`` accepts (half fit the
#: combination, half give the p-values).
MIN_CALIB = 100
#: Which score arrays each component reads.
_NEEDS = {
    "hull": ("hull",), "fdbd": ("features", "margins"), "mahalanobis": ("features",),
    "vim": ("features", "logits"), "energy": ("logits",), "knn": ("features",),
    "feature_norm": ("features",),
}
_MAX_KNOTS = 257
_FORMAT = 1


def _f64(a: Any, name: str, shape: tuple[int | None, ...]) -> np.ndarray:
    """``a`` as float64 with the given shape (None = any size), or an InputError."""
    if a is None:
        raise InputError(f"expected {name}, got None")
    x = np.asarray(a, dtype=np.float64)
    if x.ndim != len(shape) or any(s is not None and s != d for s, d in zip(shape, x.shape)):
        want = "(" + ", ".join("N" if s is None else str(s) for s in shape) + ")"
        raise InputError(f"expected {name} of shape {want}, got {x.shape}")
    return x


def _blocks(F: np.ndarray, rows: int = 8192):
    """Row blocks of ``F`` as float64 copies."""
    for lo in range(0, F.shape[0], rows):
        yield F[lo:lo + rows].astype(np.float64)


class _Transform:
    """Monotone map of one component's scores to a standard-normal scale (module docstring, 3)."""

    def __init__(self, x: np.ndarray, z: np.ndarray, slope: float) -> None:
        self.x, self.z, self.slope = x, z, float(slope)

    @classmethod
    def fit(cls, values: np.ndarray) -> _Transform:
        v = np.sort(np.asarray(values, dtype=np.float64))
        n = v.size
        k = min(n, _MAX_KNOTS)
        u = np.unique(v[np.round(np.linspace(0, n - 1, k)).astype(np.int64)])
        lo = np.searchsorted(v, u, side="left")
        hi = np.searchsorted(v, u, side="right")
        p = np.clip((lo + hi) / (2.0 * n), 0.5 / n, 1 - 0.5 / n)  # midrank ECDF
        z = ndtri(p)
        q90, q99 = np.quantile(v, [0.9, 0.99])
        if q99 > q90:
            slope = (ndtri(0.99) - ndtri(0.9)) / (q99 - q90)
        elif u[-1] > u[0]:
            slope = (z[-1] - z[0]) / (u[-1] - u[0])
        else:  # constant on the calibration data: anything above it is very unusual
            slope = 1e6 / max(abs(float(u[-1])), 1.0)
        return cls(u, z, slope)

    def __call__(self, s: np.ndarray) -> np.ndarray:
        t = np.interp(s, self.x, self.z)  # constant outside the knots, linear above the top one
        t += self.slope * np.maximum(s - self.x[-1], 0.0)
        return t


class OODScorer:
    """Combined OOD score from the guard's geometry (+ cheap feature statistics).

    Args:
        components: names from :data:`COMPONENTS`; default :data:`DEFAULT_COMPONENTS` (hull
            distance, exact-margin fDBD, Mahalanobis).
        combine: one of :data:`COMBINE` (default ``"min_variance"``).
        seed: seed of the calibration split and of the kNN subsample.
        fit_fraction: share of the calibration data that fits the combination; the rest gives
            the p-values.
        knn_k: neighbour rank of the ``knn`` component (k = 50 on all training points is about
            k = 5 on a 10% subsample).
        knn_fraction: size of the ``knn`` subsample as a share of the training features
            (at most 0.1).

    After :meth:`fit`: :meth:`score` gives ``(ood_score, p_value)``; abstain where
    ``p_value <= alpha`` for a false-abstain rate of at most ``alpha``.
    """

    def __init__(
        self,
        components: tuple[str, ...] = DEFAULT_COMPONENTS,
        combine: str = "min_variance",
        seed: int = 0,
        *,
        fit_fraction: float = 0.5,
        knn_k: int = 5,
        knn_fraction: float = 0.1,
    ) -> None:
        components = tuple(components)
        bad = [c for c in components if c not in COMPONENTS]
        if not components or bad or len(set(components)) != len(components):
            raise InputError(f"components must be distinct names from {COMPONENTS}, got "
                             f"{components}")
        if combine not in COMBINE:
            raise InputError(f"combine must be one of {COMBINE}, got {combine!r}")
        if not 0 < fit_fraction < 1:
            raise InputError(f"fit_fraction must be in (0, 1), got {fit_fraction}")
        if not 0 < knn_fraction <= 0.1:
            raise InputError(f"knn_fraction must be in (0, 0.1], got {knn_fraction}")
        if knn_k < 1:
            raise InputError(f"knn_k must be >= 1, got {knn_k}")
        self.components = components
        self.combine = combine
        self.seed = int(seed)
        self.fit_fraction = float(fit_fraction)
        self.knn_k = int(knn_k)
        self.knn_fraction = float(knn_fraction)

    # ------------------------------------------------------------------ fitting
    def fit(
        self,
        train_features: np.ndarray,
        train_labels: np.ndarray | None,
        W: np.ndarray,
        b: np.ndarray,
        calib: Mapping[str, np.ndarray],
    ) -> OODScorer:
        """Fit on in-distribution data only.

        Args:
            train_features: (N, f) training features (the guard's).
            train_labels: (N,) int labels, or the model's predictions; ``None``: predictions.
            W, b: final layer ``logits = features W^T + b``, (n, f) and (n,).
            calib: held-out in-distribution calibration data (never the training features), with
                ``features`` (M, f) and whatever the components read: ``logits`` (M, n),
                ``hull`` (M,) hull distance upper bound, ``d_min`` (M,), ``margins`` (M, n).
                At least :data:`MIN_CALIB` inputs.
        """
        W = np.asarray(W, dtype=np.float64)
        b = np.asarray(b, dtype=np.float64).reshape(-1)
        if W.ndim != 2 or b.shape != (W.shape[0],) or W.shape[0] < 2:
            raise InputError(f"expected W (n, f) with n >= 2 and b (n,), got {W.shape}, {b.shape}")
        n, f = W.shape
        F = np.asarray(train_features)
        if F.ndim != 2 or F.shape[1] != f or F.shape[0] < 2:
            raise InputError(f"expected training features (N, {f}) with N >= 2, got {F.shape}")
        if not np.all(np.isfinite(F)):
            raise InputError("training features contain NaN or Inf")
        if train_labels is None:
            y = np.argmax(F @ W.T + b, axis=1)
        else:
            y = np.asarray(train_labels).reshape(-1)
            if y.shape != (F.shape[0],) or y.dtype.kind not in "iu":
                raise InputError(f"expected integer train_labels of shape ({F.shape[0]},), got "
                                 f"{y.dtype} {y.shape}")
        if not isinstance(calib, Mapping) or "features" not in calib:
            raise InputError("expected calib: a mapping with at least 'features' (M, f)")
        m_cal = int(np.asarray(calib["features"]).shape[0])
        if m_cal < MIN_CALIB:
            raise InputError(f"OODScorer needs at least {MIN_CALIB} held-out in-distribution "
                             f"calibration inputs (half fit the combination, half give the "
                             f"p-values), got {m_cal}")
        self.W_, self.b_ = W, b
        pair = np.linalg.norm(W[:, None, :] - W[None, :, :], axis=2)
        np.fill_diagonal(pair, 1.0)
        self.pair_norm_ = np.maximum(pair, 1e-300)
        self._fit_components(F, y.astype(np.int64))

        cal = {k: calib.get(k) for k in ("features", "logits", "hull", "d_min", "margins")}
        raw = self._raw(**cal)  # (M, C): validates the arrays
        perm = np.random.default_rng(self.seed).permutation(m_cal)
        n_fit = int(round(self.fit_fraction * m_cal))
        n_fit = min(max(n_fit, MIN_CALIB // 2), m_cal - MIN_CALIB // 2)
        A, B = raw[perm[:n_fit]], raw[perm[n_fit:]]
        self.transforms_ = [_Transform.fit(A[:, k]) for k in range(raw.shape[1])]
        T = self._normal(A)
        self.mean_ = T.mean(axis=0)
        C = np.atleast_2d(np.cov(T, rowvar=False))
        self.cov_ = C
        self.weights_ = self._weights(C)
        self.scale_ = float(math.sqrt(max(float(self.weights_ @ C @ self.weights_), 1e-300)))
        # the p-value reference: the held-out half the transforms and weights never saw
        self.calib_scores_ = np.sort(self._combine(self._normal(B)))
        self.n_fit_ = int(n_fit)
        return self

    def _fit_components(self, F: np.ndarray, y: np.ndarray) -> None:
        """Parameters of the components from the training features, in float64 block by block
        (no float64 copy of all training features)."""
        comps = set(self.components)
        N, f = F.shape
        if "fdbd" in comps:
            self.centre_ = np.array([np.median(F[:, j].astype(np.float64)) for j in range(f)])
        if "mahalanobis" in comps:
            classes = np.unique(y)
            means = np.empty((classes.size, f))
            cov = np.zeros((f, f))
            for i, c in enumerate(classes):
                Fc = F[y == c].astype(np.float64)
                means[i] = Fc.mean(axis=0)
                D = Fc - means[i]
                cov += D.T @ D
            cov /= N
            vals, vecs = np.linalg.eigh(cov)
            keep = vals > max(float(vals.max()), 1e-300) * f * np.finfo(float).eps
            self.whiten_ = vecs[:, keep] / np.sqrt(vals[keep])  # (f, r): A A^T = S^+
            self.class_means_w_ = means @ self.whiten_  # (classes, r)
        if "vim" in comps:
            d = max(1, f // 2)
            self.vim_origin_ = -np.linalg.pinv(self.W_) @ self.b_
            S = np.zeros((f, f))
            for X in _blocks(F):
                X -= self.vim_origin_
                S += X.T @ X
            _, vecs = np.linalg.eigh(S / N)
            self.vim_basis_ = np.ascontiguousarray(vecs[:, : f - d])
            r_sum = logit_sum = 0.0
            for X in _blocks(F):
                logit_sum += float((X @ self.W_.T + self.b_).max(axis=1).sum())
                r_sum += float(np.linalg.norm((X - self.vim_origin_) @ self.vim_basis_,
                                              axis=1).sum())
            self.vim_alpha_ = float((logit_sum / N) / max(r_sum / N, 1e-300))
        if "knn" in comps:
            m = max(1, int(math.floor(self.knn_fraction * N)))
            idx = np.sort(np.random.default_rng(self.seed).choice(N, m, replace=False))
            S = F[idx].astype(np.float64)
            self.knn_points_ = S / (np.linalg.norm(S, axis=1, keepdims=True) + 1e-10)
            self.knn_k_ = min(self.knn_k, m)

    def _weights(self, C: np.ndarray) -> np.ndarray:
        k = C.shape[0]
        if self.combine != "min_variance" or k == 1:
            return np.full(k, 1.0 / k)
        from .geometry.qp import min_norm_point

        jitter = 1e-10 * max(float(np.trace(C)) / k, 1e-300)
        L = np.linalg.cholesky(C + jitter * np.eye(k))
        return min_norm_point(L)  # argmin ||L^T w|| = w' C w over the simplex

    # ------------------------------------------------------------------ scoring
    def _check(self) -> None:
        if not hasattr(self, "calib_scores_"):
            raise NotFittedError("this OODScorer is not fitted: call fit(...) or from_arrays(...)")

    def _raw(self, features=None, logits=None, hull=None, d_min=None, margins=None) -> np.ndarray:
        """Raw component scores (N, C), higher = more OOD."""
        n, f = self.W_.shape
        need = components_needed(self.components)
        X = Z = M = None
        N = None
        if "features" in need:
            X = _f64(features, "features", (None, f))
            N = X.shape[0]
        if "hull" in need:
            hull = _f64(hull, "hull distances", (N,))
            N = hull.shape[0]
        if "logits" in need:
            Z = _f64(logits, "logits", (N, n))
            N = Z.shape[0]
        if "margins" in need:
            M = _f64(margins, "margins", (N, n))
        R = np.empty((N, len(self.components)))
        for k, c in enumerate(self.components):
            if c == "hull":
                R[:, k] = hull
            elif c == "fdbd":
                R[:, k] = self._fdbd(X, M)
            elif c == "mahalanobis":
                R[:, k] = self._mahalanobis(X)
            elif c == "vim":
                r = np.linalg.norm((X - self.vim_origin_) @ self.vim_basis_, axis=1)
                R[:, k] = self.vim_alpha_ * r - logsumexp(Z, axis=1)
            elif c == "energy":
                R[:, k] = -logsumexp(Z, axis=1)
            elif c == "knn":
                Xn = X / (np.linalg.norm(X, axis=1, keepdims=True) + 1e-10)
                d2 = np.maximum(2.0 - 2.0 * (Xn @ self.knn_points_.T), 0.0)
                j = self.knn_k_ - 1
                R[:, k] = np.sqrt(np.partition(d2, j, axis=1)[:, j])
            else:  # feature_norm
                R[:, k] = -np.linalg.norm(X, axis=1)
        if not np.isfinite(R).all():
            raise InputError("component scores contain NaN or Inf (check hull distances, "
                             "features and logits for non-finite values)")
        return R

    def _mahalanobis(self, X: np.ndarray, chunk: int = 1024) -> np.ndarray:
        Xw = X @ self.whiten_
        mu = self.class_means_w_
        out = np.empty(X.shape[0])
        for lo in range(0, X.shape[0], chunk):  # differences, not expanded squares: exact
            D = Xw[lo:lo + chunk, None, :] - mu[None]
            out[lo:lo + chunk] = np.einsum("icr,icr->ic", D, D).min(axis=1)
        return out

    def _fdbd(self, X: np.ndarray, M: np.ndarray) -> np.ndarray:
        nan = np.isnan(M)
        M0 = np.where(nan, 0.0, M)
        total = M0.sum(axis=1)
        if not np.isfinite(total).all():  # an unreachable boundary: its hyperplane distance
            M = M.copy()
            rows = np.flatnonzero(~np.isfinite(total))
            sub = M[rows]
            if np.isneginf(sub).any():
                raise InputError("margins must be >= 0 (or inf) with NaN at the predicted class")
            Zr = X[rows] @ self.W_.T + self.b_
            pr = np.where(nan[rows].any(axis=1), np.argmax(nan[rows], axis=1),
                          np.argmax(Zr, axis=1))
            cf = np.abs(Zr[np.arange(rows.size), pr][:, None] - Zr) / self.pair_norm_[pr]
            M[rows] = np.where(np.isposinf(sub), cf, sub)
            M0 = np.where(nan, 0.0, M)
            total = M0.sum(axis=1)
        count = M.shape[1] - nan.sum(axis=1)
        if M0.min() < 0 or (count == 0).any():
            raise InputError("margins must be >= 0 with NaN only at the predicted class")
        dist = np.sqrt(((X - self.centre_) ** 2).sum(axis=1))
        return -(total / count) / np.maximum(dist, 1e-12)

    def _normal(self, R: np.ndarray) -> np.ndarray:
        T = np.empty_like(R)
        for k, t in enumerate(self.transforms_):
            T[:, k] = t(R[:, k])
        return T

    def _combine(self, T: np.ndarray) -> np.ndarray:
        if self.combine == "fisher":
            return -norm.logsf(T).sum(axis=1)
        if self.combine == "max":
            return T.max(axis=1)
        return (T - self.mean_) @ self.weights_ / self.scale_

    def component_scores(self, features=None, logits=None, hull=None, d_min=None,
                         margins=None) -> dict[str, np.ndarray]:
        """Raw component scores (each (N,), higher = more OOD), by name."""
        self._check()
        R = self._raw(features, logits, hull, d_min, margins)
        return {c: R[:, k] for k, c in enumerate(self.components)}

    def score(self, features=None, logits=None, hull=None, d_min=None,
              margins=None) -> tuple[np.ndarray, np.ndarray]:
        """``(ood_score, p_value)``, each (N,) float64.

        Arrays as the guard's :class:`~guard.types.Scores` gives them: features (N, f),
        ``logits`` (N, n), ``hull`` = ``hull_upper`` (N,), ``d_min`` (N,), ``margins`` (N, n);
        only those the components read are required (``d_min`` is accepted for a uniform call
        and not used by the current components). ``ood_score``: higher = more OOD.
        ``p_value = (1 + #{calibration scores >= ood_score}) / (n_calib + 1)``, in
        ``[1/(n_calib+1), 1]``.
        """
        self._check()
        s = self._combine(self._normal(self._raw(features, logits, hull, d_min, margins)))
        c = self.calib_scores_
        ge = c.size - np.searchsorted(c, s, side="left")
        return s, (1.0 + ge) / (c.size + 1.0)

    def score_guard(self, scores: Any, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`score` from a :class:`~guard.types.Scores` object and the features."""
        return self.score(features, scores.logits, scores.hull_upper, scores.d_min,
                          scores.margins)

    # ------------------------------------------------------------------ persistence
    _ARRAYS = ("W_", "b_", "pair_norm_", "centre_", "whiten_", "class_means_w_", "vim_origin_",
               "vim_basis_", "knn_points_", "mean_", "cov_", "weights_", "calib_scores_")

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Everything fitted, as numpy arrays (no objects: ``np.savez`` / ``np.load`` with
        ``allow_pickle=False`` round-trips it), with the configuration as a JSON string array
        under ``"config"``."""
        self._check()
        out: dict[str, np.ndarray] = {}
        for name in self._ARRAYS:
            if hasattr(self, name):
                out[name.rstrip("_")] = np.array(getattr(self, name), dtype=np.float64)
        for k, t in enumerate(self.transforms_):
            out[f"transform_x_{k}"] = np.array(t.x, dtype=np.float64)
            out[f"transform_z_{k}"] = np.array(t.z, dtype=np.float64)
        config = {
            "format": _FORMAT, "components": list(self.components), "combine": self.combine,
            "seed": self.seed, "fit_fraction": self.fit_fraction, "knn_k": self.knn_k,
            "knn_fraction": self.knn_fraction, "n_fit": self.n_fit_,
            "slopes": [float(t.slope).hex() for t in self.transforms_],
            "scale": float(self.scale_).hex(),
            "vim_alpha": float(self.vim_alpha_).hex() if hasattr(self, "vim_alpha_") else None,
            "knn_k_fitted": getattr(self, "knn_k_", None),
        }
        out["config"] = np.array(json.dumps(config))
        return out

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> OODScorer:
        """The scorer :meth:`to_arrays` wrote, exactly (bit for bit)."""
        try:
            cfg = json.loads(str(np.asarray(arrays["config"])))
            if cfg.get("format") != _FORMAT:
                raise InputError(f"unknown OODScorer format {cfg.get('format')!r}")
            self = cls(tuple(cfg["components"]), cfg["combine"], cfg["seed"],
                       fit_fraction=cfg["fit_fraction"], knn_k=cfg["knn_k"],
                       knn_fraction=cfg["knn_fraction"])
            for name in cls._ARRAYS:
                key = name.rstrip("_")
                if key in arrays:
                    setattr(self, name, np.array(arrays[key], dtype=np.float64))
            self.transforms_ = [
                _Transform(np.array(arrays[f"transform_x_{k}"], dtype=np.float64),
                           np.array(arrays[f"transform_z_{k}"], dtype=np.float64),
                           float.fromhex(s))
                for k, s in enumerate(cfg["slopes"])]
            self.scale_ = float.fromhex(cfg["scale"])
            self.n_fit_ = int(cfg["n_fit"])
            if cfg.get("vim_alpha") is not None:
                self.vim_alpha_ = float.fromhex(cfg["vim_alpha"])
            if cfg.get("knn_k_fitted") is not None:
                self.knn_k_ = int(cfg["knn_k_fitted"])
        except (KeyError, ValueError, TypeError) as err:
            if isinstance(err, InputError):
                raise
            raise InputError(f"not an OODScorer's arrays: {err}") from err
        needed = {"fdbd": "centre_", "mahalanobis": "whiten_", "vim": "vim_basis_",
                  "knn": "knn_points_"}
        missing = [a for c, a in needed.items() if c in self.components and not hasattr(self, a)]
        if missing or len(self.transforms_) != len(self.components):
            raise InputError(f"OODScorer arrays incomplete: missing {missing or 'transforms'}")
        return self

    def __repr__(self) -> str:
        return (f"OODScorer(components={self.components!r}, combine={self.combine!r}, "
                f"seed={self.seed})")


def components_needed(components: Sequence[str]) -> set[str]:
    """Which of ``features``, ``logits``, ``hull``, ``margins`` the components read."""
    return {a for c in components for a in _NEEDS[c]}
