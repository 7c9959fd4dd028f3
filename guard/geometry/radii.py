"""The training radii ``r_t = d_min(x_t)`` of the union of learned regions, on every core, in
resumable chunks.

Fitting computes the exact ``d_min`` of every training feature (:func:`compute_margins` with
``d_min_only``): hours on one core for an ImageNet-sized head (1.28M rows x 1,000 classes x
2,048 features). :func:`training_radii` splits the rows into chunks, computes them in worker
processes (one BLAS thread each), shows one progress bar, and, for large jobs, saves every
finished chunk under a checkpoint directory named by a fingerprint of the inputs: an interrupted
fit that is run again on the same features and head resumes from the chunks already done (and
the directory is removed once all are).
"""

from __future__ import annotations

import hashlib
import multiprocessing as mp
import os
import shutil
import tempfile
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .margins import compute_margins
from .progress import progress_bar

# Below this many rows x classes the work is done in this process, without checkpoints.
_SMALL = 2_000_000


@dataclass(frozen=True)
class Radii:
    """``pred`` (N,) int64 predicted classes and ``d_min`` (N,) float64 exact smallest margins
    (inf where no boundary is reachable)."""

    pred: np.ndarray
    d_min: np.ndarray


def default_workers() -> int:
    """The cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def checkpoint_root() -> Path:
    """Where chunk checkpoints live: ``$GUARD_CHECKPOINT_DIR``, else
    ``$XDG_CACHE_HOME/guard/radii`` (``~/.cache/guard/radii``)."""
    env = os.environ.get("GUARD_CHECKPOINT_DIR")
    if env:
        return Path(env)
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "guard" / "radii"


def _checkpoint_folder(name: str) -> Path | None:
    """The job's checkpoint folder (created), under :func:`checkpoint_root` or, where that is
    not writable (a read-only home), the temp directory; None when neither is."""
    for root in (checkpoint_root(), Path(tempfile.gettempdir()) / "guard-radii"):
        try:
            (root / name).mkdir(parents=True, exist_ok=True)
            return root / name
        except OSError:
            continue
    return None


def _fingerprint(X: np.ndarray, W: np.ndarray, b: np.ndarray, nonneg: bool, chunk: int) -> str:
    h = hashlib.sha256()
    for a in (W, b):
        h.update(np.ascontiguousarray(a, dtype=np.float64).tobytes())
    h.update(f"{nonneg}|{chunk}|{X.shape}|{X.dtype}".encode())
    for lo in range(0, len(X), 65536):  # the features themselves, in bounded memory
        h.update(np.ascontiguousarray(X[lo : lo + 65536]).tobytes())
    return h.hexdigest()[:24]


# The arrays of the running job, inherited by forked workers (nothing is pickled per chunk).
_JOB: dict[str, object] = {}


def _work(lo: int, hi: int) -> tuple[int, np.ndarray, np.ndarray]:
    X, W, b, nonneg = _JOB["X"], _JOB["W"], _JOB["b"], _JOB["nonneg"]
    assert isinstance(X, np.ndarray) and isinstance(W, np.ndarray) and isinstance(b, np.ndarray)
    try:  # one BLAS thread per worker process
        from threadpoolctl import threadpool_limits

        with threadpool_limits(1):
            m = compute_margins(X[lo:hi], W, b, bool(nonneg), d_min_only=True)
    except ImportError:
        m = compute_margins(X[lo:hi], W, b, bool(nonneg), d_min_only=True)
    return lo, m.pred, m.d_min


def training_radii(
    X: np.ndarray,
    W: np.ndarray,
    b: np.ndarray,
    nonneg: bool,
    *,
    workers: int | None = None,
    chunk: int | None = None,
    checkpoint: bool | None = None,
    progress: bool = False,
) -> Radii:
    """Exact ``d_min`` and the predicted class of every row of ``X`` (N, f) for the head ``W``
    (n, f), ``b`` (n,) (same values as ``compute_margins(X, W, b, nonneg, d_min_only=True)``).

    Args:
        workers: processes (default: every core this process may use; 1 = in this process).
        chunk: rows per chunk (default: about 64 chunks per worker, 256..16,384 rows).
        checkpoint: save finished chunks and resume from them (default: for jobs of at least
            2M rows x classes; see :func:`checkpoint_root`).
        progress: one progress bar over the rows.
    """
    N, n = X.shape[0], W.shape[0]
    workers = default_workers() if workers is None else max(1, int(workers))
    if chunk is None:
        chunk = int(np.clip(N // (64 * workers) + 1, 256, 16384))
    big = N * n >= _SMALL
    if checkpoint is None:
        checkpoint = big
    if not big and not checkpoint:
        workers = 1
    pred = np.zeros(N, dtype=np.int64)
    d_min = np.zeros(N)
    bounds = [(lo, min(lo + chunk, N)) for lo in range(0, N, chunk)]
    folder = None
    todo = bounds
    if checkpoint:
        folder = _checkpoint_folder(_fingerprint(X, W, b, nonneg, chunk))
    if folder is not None:
        todo = []
        for lo, hi in bounds:
            f = folder / f"{lo:012d}.npz"
            if f.exists():
                try:
                    with np.load(f) as z:
                        pred[lo:hi], d_min[lo:hi] = z["pred"], z["d_min"]
                    continue
                except Exception:  # noqa: BLE001 - a chunk cut short or corrupt: redo it
                    pass
            todo.append((lo, hi))

    def done(lo: int, p: np.ndarray, dm: np.ndarray) -> None:
        pred[lo : lo + len(p)], d_min[lo : lo + len(p)] = p, dm
        if folder is not None:
            tmp = folder / f".{lo:012d}.tmp.npz"
            np.savez(tmp, pred=p, d_min=dm)
            os.replace(tmp, folder / f"{lo:012d}.npz")  # complete chunks only
        bar.update(len(p))

    with progress_bar(N, "training radii", enabled=progress) as bar:
        bar.update(N - sum(hi - lo for lo, hi in todo))
        _JOB.update(X=X, W=W, b=b, nonneg=nonneg)
        try:
            if workers == 1 or len(todo) <= 1 or "fork" not in mp.get_all_start_methods():
                for lo, hi in todo:
                    done(*_work(lo, hi))
            else:
                ctx = mp.get_context("fork")
                with ProcessPoolExecutor(min(workers, len(todo)), mp_context=ctx) as pool:
                    futures = [pool.submit(_work, lo, hi) for lo, hi in todo]
                    for fut in as_completed(futures):
                        done(*fut.result())
        finally:
            _JOB.clear()
    if folder is not None:
        shutil.rmtree(folder, ignore_errors=True)
    return Radii(pred, d_min)
