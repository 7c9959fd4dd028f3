"""Virtual-logit matching, ViM (Wang et al., CVPR 2022), as in the authors' code.

Origin ``u = -pinv(W) b`` (the point whose logits are zero in the least-squares sense);
``S = 1/N sum (x_i - u)(x_i - u)^T``; the principal subspace is spanned by the eigenvectors of
its ``principal_dim`` largest eigenvalues, the residual space by the rest. With the residual
norm ``r(x) = ||P_res (x - u)||`` and ``alpha = mean_train max logit / mean_train r``, the
virtual logit is ``alpha r(x)`` and the OOD score is ``alpha r(x) - logsumexp(z)`` (the negated
ID score ``energy - vlogit`` of the paper's code; the paper's softmax of the virtual logit ranks
inputs the same way).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from ..errors import InputError
from .base import Detector, Evidence
from .lse import logsumexp

__all__ = ["ViM"]


def _blocks(F: np.ndarray, rows: int = 8192) -> Iterator[np.ndarray]:
    """Row blocks of ``F`` as float64 copies (no float64 copy of all of ``F``)."""
    for lo in range(0, F.shape[0], rows):
        yield F[lo : lo + rows].astype(np.float64)


class ViM(Detector):
    """Residual norm as a virtual logit against the energy (module docstring).

    Args:
        principal_dim: dimension D of the principal subspace. The paper uses D = 1000 for 2048-d
            and 512 for 768-d features (about half the width, and more than the number of
            classes). ``None`` = ``f // 2`` (32 for the default model's 64 features, above its
            10 classes).

    Attributes set by :meth:`fit`: ``origin_`` (f,) ``u``, ``basis_`` (f, f - D) orthonormal
    basis of the residual space, ``alpha_`` the virtual-logit scale, ``principal_dim_`` D.
    """

    name = "vim"
    needs = ("features", "logits")
    state = ("origin_", "basis_", "alpha_", "principal_dim_")

    def __init__(self, principal_dim: int | None = None) -> None:
        self.principal_dim = None if principal_dim is None else int(principal_dim)

    def _fit(self, F: np.ndarray, y: np.ndarray | None) -> None:
        N, f = F.shape
        d = f // 2 if self.principal_dim is None else self.principal_dim
        if not 0 < d < f:
            raise InputError(
                f"ViM needs a principal_dim in 1..{f - 1} (features of width {f} >= 2), got {d}"
            )
        self.principal_dim_ = d
        self.origin_ = -np.linalg.pinv(self.W_) @ self.b_
        S = np.zeros((f, f))
        for X in _blocks(F):
            X -= self.origin_
            S += X.T @ X
        _, vecs = np.linalg.eigh(S / N)  # ascending eigenvalues
        self.basis_ = np.ascontiguousarray(vecs[:, : f - d])  # the f - d smallest
        r_sum = logit_sum = 0.0
        for X in _blocks(F):
            logit_sum += float((X @ self.W_.T + self.b_).max(axis=1).sum())
            r_sum += float(np.linalg.norm((X - self.origin_) @ self.basis_, axis=1).sum())
        self.alpha_ = float((logit_sum / N) / max(r_sum / N, 1e-300))

    def residual(self, evidence: Evidence | np.ndarray) -> np.ndarray:
        """``||P_res (x - u)||`` (N,) of features (N, f) or Evidence."""
        self._check()
        ev = evidence if isinstance(evidence, Evidence) else Evidence(features=evidence)
        return np.linalg.norm((self._read(ev, "features") - self.origin_) @ self.basis_, axis=1)

    def _score(self, ev: Evidence) -> np.ndarray:
        return self.alpha_ * self.residual(ev) - logsumexp(self._read(ev, "logits"))
