"""Products with a fixed float32 matrix of training rows: the scans of the hull's full rounds
and of the union of learned regions.

On the CPU this is one BLAS call (``by_row``, ``M @ X.T``, is the faster orientation for a
few rows of X; a transposed copy would cost more than it saves, so ``__call__`` uses
``X @ M.T``). When torch with CUDA is installed and a GPU is present (``device="auto"``), a
copy of the matrix lives on the GPU and the product runs there; TF32 is switched off for it so
that every product is an IEEE float32 sum of float32 products, the arithmetic the callers'
rounding-error bounds assume (``|fl(x.y) - x.y| <= gamma_d |x| |y|`` for any summation order).
``device="torch"`` runs the same torch code on the CPU (used by the tests). The server's
setting is ``GUARD_DEVICE`` / ``guard serve --device``.
"""

from __future__ import annotations

import logging
import os

import numpy as np

from .errors import GeometryError

log = logging.getLogger(__name__)

DEVICES = ("auto", "cpu", "cuda", "torch")


def _gpu_present() -> bool:
    """Cheap test for an NVIDIA GPU (its device node) before importing torch."""
    return os.path.exists("/dev/nvidiactl") or os.path.exists("/dev/nvidia0")


def surely_cpu(device: str) -> bool:
    """Whether full rounds on ``device`` scan on the CPU, known without importing torch:
    ``cpu``, or ``auto`` on a machine without an NVIDIA GPU."""
    return device == "cpu" or (device == "auto" and not _gpu_present())


class RowProducts:
    """``products(X) = X @ M.T`` (B x N, C-contiguous float32) for a fixed (N, k) float32 ``M``.

    Args:
        M: (N, k) float32 rows (kept by reference on the CPU).
        device: ``auto`` (CUDA through torch when available, else CPU), ``cpu``, ``cuda``
            (error if unavailable) or ``torch`` (torch on the CPU).
    """

    def __init__(self, M: np.ndarray, device: str = "auto") -> None:
        if device not in DEVICES:
            raise GeometryError(f"device must be one of {DEVICES}, got {device!r}")
        self.M = M
        self.device = "cpu"
        self._t = None
        if surely_cpu(device):
            return  # (auto: torch is not even imported on a machine without an NVIDIA GPU)
        try:
            import torch
        except ImportError:
            if device in ("cuda", "torch"):
                raise GeometryError(f"device={device!r} needs torch installed") from None
            return
        if device == "torch":
            self._t, self.device = torch.from_numpy(np.ascontiguousarray(M)), "torch"
            return
        if not torch.cuda.is_available():
            if device == "cuda":
                raise GeometryError("device='cuda' but torch sees no CUDA GPU")
            return
        try:
            torch.backends.cuda.matmul.allow_tf32 = False  # IEEE float32 products (see above)
            self._t = torch.from_numpy(np.ascontiguousarray(M)).to("cuda")
            self.device = "cuda"
        except Exception as exc:  # noqa: BLE001 - a broken CUDA set-up falls back to the CPU
            if device == "cuda":
                raise
            log.warning("CUDA present but unusable (%s): scans run on the CPU", exc)

    def __call__(self, X: np.ndarray) -> np.ndarray:
        """``X @ M.T``: (B, N) C-contiguous float32 for X (B, k)."""
        if self._t is None:
            X = np.ascontiguousarray(X, dtype=np.float32)
            return X @ self.M.T
        import torch

        with torch.no_grad():
            x = torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32)).to(self._t.device)
            return (x @ self._t.T).cpu().numpy()

    def by_row(self, X: np.ndarray) -> np.ndarray:
        """``M @ X.T``: (N, B) C-contiguous float32 (one row per row of M)."""
        X = np.ascontiguousarray(X, dtype=np.float32)
        if self._t is None:
            return self.M @ X.T  # the fast BLAS orientation: M is read once for all of X
        import torch

        with torch.no_grad():
            x = torch.from_numpy(X).to(self._t.device)
            return (self._t @ x.T).contiguous().cpu().numpy()
