"""Fast decision-boundary-based detector, fDBD (Liu & Qin, ICML 2024), and the guard's variant
with exact margins.

For predicted class ``i`` fDBD averages the distances ``m_j(x)`` to the boundaries with every
other class ``j`` and divides by the distance of ``x`` to a centre of the training features;
higher = more in-distribution, so the outlier score is

    ``-mean_{j != i} m_j(x) / ||x - c||``.

* ``margins="hyperplane"`` (the paper): ``m_j = |z_i - z_j| / ||w_i - w_j||``, the closed-form
  distance to the pair's hyperplane, from the logits. (The authors' code sums over ``j``; the
  mean is the same score divided by ``n - 1``.)
* ``margins="exact"``: the exact, constrained margins of the guard (``Evidence.margins``, eq.
  7-12 of the paper). A boundary that cannot be reached (margin ``inf``) counts with its
  hyperplane distance, a lower bound: conservative.
* ``centre="mean"`` (the paper) or ``"median"`` (coordinate-wise; robust to a few extreme
  training features).
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from .base import Detector, Evidence

__all__ = ["FDBD"]

MARGINS = ("hyperplane", "exact")
CENTRES = ("mean", "median")


class FDBD(Detector):
    """Mean distance to the other classes' boundaries over the distance to the training centre.

    Args:
        margins: ``"hyperplane"`` (from the logits, the paper) or ``"exact"`` (reads
            ``Evidence.margins``).
        centre: ``"mean"`` (the paper) or ``"median"`` of the training features.
        eps: floor of ``||x - c||``.

    Attributes set by :meth:`fit`: ``centre_`` (f,), ``pair_norm_`` (n, n) ``||w_i - w_j||``
    (1 on the diagonal).
    """

    name = "fdbd"
    state = ("centre_", "pair_norm_")

    def __init__(
        self, margins: str = "hyperplane", centre: str = "mean", eps: float = 1e-12
    ) -> None:
        if margins not in MARGINS:
            raise InputError(f"margins must be one of {MARGINS}, got {margins!r}")
        if centre not in CENTRES:
            raise InputError(f"centre must be one of {CENTRES}, got {centre!r}")
        self.margins = margins
        self.centre = centre
        self.eps = float(eps)
        self.needs = ("features", "margins") if margins == "exact" else ("features", "logits")

    def _fit(self, F: np.ndarray, y: np.ndarray | None) -> None:
        if self.W_.shape[0] < 2:
            raise InputError(f"fDBD needs at least 2 classes, got W {self.W_.shape}")
        if self.centre == "median":  # column by column: no float64 copy of all of F
            self.centre_ = np.array(
                [np.median(F[:, j].astype(np.float64)) for j in range(F.shape[1])]
            )
        else:
            self.centre_ = F.mean(axis=0, dtype=np.float64)
        W = self.W_
        pair = np.linalg.norm(W[:, None, :] - W[None, :, :], axis=2)
        np.fill_diagonal(pair, 1.0)
        self.pair_norm_ = np.maximum(pair, 1e-300)

    def _hyperplane(self, Z: np.ndarray, pred: np.ndarray) -> np.ndarray:
        """``|z_i - z_j| / ||w_i - w_j||`` (N, n) for predicted classes ``i = pred``."""
        return np.abs(Z[np.arange(len(Z)), pred][:, None] - Z) / self.pair_norm_[pred]

    def _exact(self, X: np.ndarray, M: np.ndarray) -> np.ndarray:
        """The exact margins with unreachable boundaries (inf) replaced by hyperplane ones."""
        nan = np.isnan(M)
        bad = ~np.isfinite(np.where(nan, 0.0, M)).all(axis=1)
        if bad.any():
            rows = np.flatnonzero(bad)
            sub = M[rows]
            if np.isneginf(sub).any():
                raise InputError("margins must be >= 0 (or inf) with NaN at the predicted class")
            Zr = X[rows] @ self.W_.T + self.b_
            pr = np.where(
                nan[rows].any(axis=1), np.argmax(nan[rows], axis=1), np.argmax(Zr, axis=1)
            )
            M = M.copy()
            M[rows] = np.where(np.isposinf(sub), self._hyperplane(Zr, pr), sub)
        return M

    def _score(self, ev: Evidence) -> np.ndarray:
        X = self._read(ev, "features")
        if self.margins == "exact":
            M = self._exact(X, self._read(ev, "margins"))
        else:
            Z = self._read(ev, "logits")
            pred = Z.argmax(axis=1)
            M = self._hyperplane(Z, pred)
            M[np.arange(len(M)), pred] = np.nan
        nan = np.isnan(M)
        M0 = np.where(nan, 0.0, M)
        count = M.shape[1] - nan.sum(axis=1)
        if M0.min(initial=0.0) < 0 or (count == 0).any():
            raise InputError("margins must be >= 0 with NaN only at the predicted class")
        dist = np.sqrt(((X - self.centre_) ** 2).sum(axis=1))
        return -(M0.sum(axis=1) / count) / np.maximum(dist, self.eps)
