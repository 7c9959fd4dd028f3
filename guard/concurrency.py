"""Independent pieces of work on several threads (``n_jobs``), BLAS on one thread meanwhile.

The geometry of a batch is two independent computations (the scans of the two hulls and the
union of balls, whose compiled core splits its own work over two threads, and the margins) that
spend their time in compiled code and BLAS, both of which release the GIL: threads run them in
parallel.
BLAS's own threads would then compete with them for the same cores (measured in
``bench/geometry.py``: two threads over two-thread BLAS are slower than one thread), so while
they run every BLAS library of the process is limited to one thread (``threadpoolctl``; process-
wide, restored when the last caller leaves).

Scheduling is greedy: the tasks are taken in the order given (the most expensive first) by the
first free thread, the caller's own thread included. Results come back in task order and do not
depend on the number of threads; the first exception raised is re-raised once every task has
ended (nothing is left running).
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .errors import InputError

_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None
_pool_size = 0
_controller: Any = None  # threadpoolctl.ThreadpoolController, built on first use (~15 ms)
_blas_users = 0
_blas_limit: Any = None
_CORES_TTL_S = 5.0  # how long a reading of the affinity and the cgroup quota is reused
_cores_seen: dict[str, tuple[float, int]] = {}


def _forget_in_child() -> None:
    """A forked child (e.g. fit's radii workers) has none of the parent's threads: start from
    scratch there instead of submitting to a pool whose threads do not exist."""
    global _lock, _pool, _pool_size, _blas_users, _blas_limit
    _lock = threading.Lock()
    _pool, _pool_size, _blas_users, _blas_limit = None, 0, 0, None
    _cores_seen.clear()  # (its affinity may be set anew)


os.register_at_fork(after_in_child=_forget_in_child)


def available_cores(cgroup_root: str = "/sys/fs/cgroup") -> int:
    """CPU cores this process may use: its affinity mask (e.g. a container's cpuset), capped by
    a CPU quota of its cgroup (a Kubernetes CPU limit: cgroup v2 ``cpu.max``, v1
    ``cpu.cfs_quota_us``), rounded up; at least 1. Read again after ``_CORES_TTL_S`` seconds
    (reading costs ~0.1 ms, a scored batch asks every time; a pod's limit can be resized)."""
    now = time.monotonic()
    seen = _cores_seen.get(cgroup_root)
    if seen is not None and now - seen[0] < _CORES_TTL_S:
        return seen[1]
    cores = _read_cores(cgroup_root)
    _cores_seen[cgroup_root] = (now, cores)
    return cores


def _read_cores(cgroup_root: str) -> int:
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cores = os.cpu_count() or 1
    quota = cgroup_cpu_quota(cgroup_root)
    if quota is not None:
        cores = min(cores, math.ceil(quota))
    return max(1, cores)


def cgroup_cpu_quota(root: str = "/sys/fs/cgroup") -> float | None:
    """The CPU quota of this process's cgroup in cores (quota / period), or None (no limit,
    or no cgroup files to read)."""
    base = Path(root)
    try:  # cgroup v2: "max 100000" or "<quota> <period>"
        quota, period = (base / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:  # cgroup v1: quota -1 = no limit
        quota_us = int((base / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((base / "cpu" / "cpu.cfs_period_us").read_text())
        return None if quota_us <= 0 or period_us <= 0 else quota_us / period_us
    except (OSError, ValueError):
        return None


def resolve_jobs(n_jobs: int) -> int:
    """``n_jobs`` as a number of threads: itself when positive, ``-1`` all available cores,
    ``-2`` all but one, ... (scikit-learn's convention), at least 1."""
    if n_jobs == 0:
        raise InputError("n_jobs must not be 0 (1 = no threads, -1 = every core)")
    return n_jobs if n_jobs > 0 else max(1, available_cores() + 1 + n_jobs)


def _executor(workers: int) -> ThreadPoolExecutor:
    """The shared pool, grown to at least ``workers`` threads (never shrunk)."""
    global _pool, _pool_size
    with _lock:
        if _pool is None or _pool_size < workers:
            old = _pool
            _pool = ThreadPoolExecutor(workers, thread_name_prefix="guard-jobs")
            _pool_size = workers
            if old is not None:
                old.shutdown(wait=False)
        return _pool


@contextmanager
def single_threaded_blas() -> Iterator[None]:
    """BLAS on one thread per call while inside (nested and concurrent callers share it)."""
    global _controller, _blas_users, _blas_limit
    with _lock:
        if _blas_users == 0:
            if _controller is None:
                from threadpoolctl import ThreadpoolController

                _controller = ThreadpoolController()
            _blas_limit = _controller.limit(limits=1, user_api="blas")
        _blas_users += 1
    try:
        yield
    finally:
        with _lock:
            _blas_users -= 1
            if _blas_users == 0 and _blas_limit is not None:
                _blas_limit.restore_original_limits()
                _blas_limit = None


def run_tasks(tasks: Sequence[Callable[[], Any]], n_jobs: int = 1) -> list[Any]:
    """``[t() for t in tasks]``, on up to ``n_jobs`` threads (see the module docstring)."""
    threads = min(resolve_jobs(n_jobs), len(tasks))
    if threads <= 1:
        return [t() for t in tasks]
    results: list[Any] = [None] * len(tasks)
    errors: list[BaseException] = []
    order = iter(range(len(tasks)))
    take = threading.Lock()

    def work() -> None:
        while True:
            with take:
                i = next(order, None)
                if i is None or errors:
                    return
            try:
                results[i] = tasks[i]()
            except BaseException as exc:  # noqa: BLE001 - re-raised by the caller below
                with take:
                    errors.append(exc)

    with single_threaded_blas():
        pool = _executor(threads - 1)
        helpers = [pool.submit(work) for _ in range(threads - 1)]
        work()
        for h in helpers:
            h.result()
    if errors:
        raise errors[0]
    return results
