"""Mahalanobis distance to class-conditional Gaussians with one shared covariance (Lee et al.,
NeurIPS 2018), on the penultimate features only.

Fit: class means ``mu_c`` and the shared within-class (maximum-likelihood) covariance
``S = 1/N sum_c sum_{i in c} (x_i - mu_c)(x_i - mu_c)^T``, in float64 class by class. Its
pseudo-inverse is applied as a whitening ``A = V diag(lambda)^-1/2`` over the numerically nonzero
eigenvalues (``lambda > f eps lambda_max``), ``A A^T = S^+``: dead ReLU features (a singular
``S``) need no ridge. Score: ``min_c ||A^T (x - mu_c)||^2``, the squared distance to the closest
class (the paper's confidence score is its negative; pytorch-ood reports half of it with an
unnormalised, ridged covariance: the same ranking). The paper's layer ensemble and input
pre-processing are not used: only the penultimate layer is available.
"""

from __future__ import annotations

import numpy as np

from .base import Detector, Evidence

__all__ = ["Mahalanobis", "within_class_covariance"]


def within_class_covariance(F: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Class means (classes, f) in the order of ``np.unique(y)`` and the shared within-class
    maximum-likelihood covariance ``1/N sum_c sum_{i in c} (x_i - mu_c)(x_i - mu_c)^T`` (f, f),
    in float64 one class at a time (no float64 copy of all of ``F``)."""
    N, f = F.shape
    classes = np.unique(y)
    means = np.empty((classes.size, f))
    cov = np.zeros((f, f))
    for i, c in enumerate(classes):
        Fc = F[y == c].astype(np.float64)
        means[i] = Fc.mean(axis=0)
        D = Fc - means[i]
        cov += D.T @ D
    return means, cov / N


class Mahalanobis(Detector):
    """Squared Mahalanobis distance to the nearest class mean (module docstring).

    Labels are required in principle; without them the model's predictions are used.

    Attributes set by :meth:`fit`: ``whiten_`` (f, r) with ``whiten_ whiten_^T = S^+`` and
    ``class_means_w_`` (classes, r), the class means in whitened coordinates.
    """

    name = "mahalanobis"
    needs = ("features",)
    state = ("whiten_", "class_means_w_")

    def _fit(self, F: np.ndarray, y: np.ndarray | None) -> None:
        means, cov = within_class_covariance(F, self._labels(F, y))
        f = F.shape[1]
        vals, vecs = np.linalg.eigh(cov)
        keep = vals > max(float(vals.max()), 1e-300) * f * np.finfo(float).eps
        self.whiten_ = vecs[:, keep] / np.sqrt(vals[keep])  # (f, r): A A^T = S^+
        self.class_means_w_ = means @ self.whiten_  # (classes, r)

    def _score(self, ev: Evidence, chunk: int = 1024) -> np.ndarray:
        Xw = self._read(ev, "features") @ self.whiten_
        mu = self.class_means_w_
        out = np.empty(Xw.shape[0])
        for lo in range(0, Xw.shape[0], chunk):  # differences, not expanded squares: exact
            D = Xw[lo : lo + chunk, None, :] - mu[None]
            out[lo : lo + chunk] = np.einsum("icr,icr->ic", D, D).min(axis=1)
        return out
