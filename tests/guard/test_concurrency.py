"""guard.concurrency: tasks on several threads, BLAS on one thread meanwhile, and
``Guard.score_features`` giving the same answers whatever ``n_jobs``."""

from __future__ import annotations

import dataclasses
import math
import os
import threading
import time

import numpy as np
import pytest
from threadpoolctl import threadpool_info

from guard import Guard, concurrency
from guard.concurrency import available_cores, cgroup_cpu_quota, resolve_jobs, run_tasks
from guard.errors import InputError
from guard.model import OnnxClassifier

from . import onnx_builders as ob


def _blas_threads() -> set[int]:
    """Threads of the BLAS libraries the geometry calls (numpy's and scipy's OpenBLAS; an
    OpenMP-built BLAS, e.g. faiss's, reports a per-thread setting, so it is left out)."""
    return {
        i["num_threads"]
        for i in threadpool_info()
        if i["user_api"] == "blas" and i.get("threading_layer") != "openmp"
    }


@pytest.mark.parametrize("n_jobs", [1, 2, 3, -1, 8])
def test_results_in_task_order(n_jobs):
    tasks = [lambda i=i: (time.sleep(0.002 * (5 - i)), i * i)[1] for i in range(5)]
    assert run_tasks(tasks, n_jobs) == [0, 1, 4, 9, 16]


def test_tasks_really_run_side_by_side():
    """Two tasks that each wait for the other finish only if they run at the same time."""
    barrier = threading.Barrier(2, timeout=10)
    assert run_tasks([barrier.wait, barrier.wait], 2) is not None


def test_blas_is_single_threaded_inside_and_restored_after():
    before = _blas_threads()
    seen = run_tasks([_blas_threads, _blas_threads], 2)
    assert seen == [{1}, {1}]
    assert _blas_threads() == before
    assert run_tasks([_blas_threads], 2) == [before]  # one task: no threads, BLAS untouched


def test_first_error_is_raised_after_every_task_ended():
    ended = []

    def slow() -> int:
        time.sleep(0.05)
        ended.append("slow")
        return 1

    def bad() -> int:
        raise InputError("bad task")

    with pytest.raises(InputError, match="bad task"):
        run_tasks([slow, bad, slow], 2)
    assert "slow" in ended
    assert _blas_threads() != set() and run_tasks([lambda: 7, lambda: 8], 2) == [7, 8]


@pytest.mark.parametrize(
    "files, quota",
    [
        ({"cpu.max": "max 100000\n"}, None),
        ({"cpu.max": "150000 100000\n"}, 1.5),
        ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
        ({"cpu/cpu.cfs_quota_us": "300000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 3.0),
        ({"cpu.max": "garbage"}, None),
        ({}, None),
    ],
)
def test_cgroup_cpu_quota(tmp_path, files, quota):
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert cgroup_cpu_quota(str(tmp_path)) == quota
    cores = available_cores(str(tmp_path))
    assert 1 <= cores <= len(os.sched_getaffinity(0))
    if quota is not None:
        assert cores == min(len(os.sched_getaffinity(0)), math.ceil(quota))


def test_available_cores_reads_the_quota_again_after_its_ttl(tmp_path, monkeypatch):
    """A reading is reused for a few seconds (a scored batch asks every time), then taken
    again: a pod whose CPU limit is resized in place gets the new number of threads."""
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs two cores")
    (tmp_path / "cpu.max").write_text("100000 100000\n")
    assert available_cores(str(tmp_path)) == 1
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert available_cores(str(tmp_path)) == 1  # within the TTL: the reading is reused
    monkeypatch.setattr(concurrency, "_CORES_TTL_S", 0.0)
    assert available_cores(str(tmp_path)) == len(os.sched_getaffinity(0))


def test_a_forked_child_runs_tasks_on_its_own_threads():
    """After a fork the parent's pool threads do not exist in the child: it must not hang."""
    run_tasks([lambda: 1, lambda: 2], 2)  # the parent's pool exists now
    pid = os.fork()
    if pid == 0:  # child: exit 0 only if the tasks ran
        try:
            ok = run_tasks([lambda: 1, lambda: 2], 2) == [1, 2]
        finally:
            os._exit(0 if ok else 1)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            assert os.waitstatus_to_exitcode(status) == 0
            return
        time.sleep(0.05)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    raise AssertionError("the forked child hung in run_tasks")


def test_resolve_jobs():
    assert resolve_jobs(3) == 3
    assert resolve_jobs(-1) >= 1
    assert resolve_jobs(-1000) == 1
    with pytest.raises(InputError, match="n_jobs"):
        resolve_jobs(0)


def test_score_features_identical_for_every_n_jobs():
    built = ob.gemm_transb1(seed=3)
    x = ob.random_inputs(1200, seed=4)
    y = np.random.default_rng(5).integers(0, ob.N_CLASSES, size=len(x))
    guard = Guard(hull_k=32, calib_fraction=0.2).fit(OnnxClassifier(built.data), x, y)
    q = ob.random_inputs(40, seed=6)
    q[:10] = 3.0 * q[:10] - 1.0  # some far outside
    logits, feats = guard.require_model().run(q)
    want = guard.score_features(feats, logits)
    for n_jobs in (2, 4, -1):
        guard.n_jobs = n_jobs
        got = guard.score_features(feats, logits)
        for f in dataclasses.fields(want):
            a, b = getattr(want, f.name), getattr(got, f.name)
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=f.name)
