"""Benchmark: membership in the union of learned regions, the matrix scan (guard.geometry.regions.
UnionOfBalls) vs the first version (FAISS kNN + range search, kept in the tests as the
independent check) on the same queries in the same run; answers must be identical.

    python bench/union.py [--quick] [--out-dir bench/results]

Single-threaded. Data: the default model's features of the 60,000 Fashion-MNIST training
images with their radii d_min(x_t) (from the default artifact, fitted first if missing);
queries: Fashion-MNIST test images and handwritten digits, scored at several batch sizes.
"""

from __future__ import annotations

import os

for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import faiss

from bench.common import stats, write_results
from guard.evaluation import sets as evalsets
from guard.geometry.regions import UnionOfBalls
from tests.reference.union_range_search import union_membership

faiss.omp_set_num_threads(1)


def _time(fn, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer queries and repeats")
    ap.add_argument("--out-dir", default="bench/results")
    args = ap.parse_args(argv)
    from guard.defaults import default_guard

    guard = default_guard(Path("artifacts/fmnist_resnet"), progress=False)
    n = 64 if args.quick else 192
    x = np.concatenate([evalsets.fmnist_test(n // 2, seed=0)[0], evalsets.digits(n // 2)])
    F = guard.model_.run(x)[1]
    union = UnionOfBalls(guard.hull_.points, guard.radii_, device="cpu")
    repeats = 3 if args.quick else 5
    rows = []
    for batch in (1, 8, 64, n):
        Q = F[:batch]
        new = union.query(Q)
        old = union_membership(guard.hull_.index, guard.radii_, Q)
        same = (
            np.array_equal(new.in_union, old.in_union)
            and np.array_equal(new.n_balls, old.n_balls)
            and np.array_equal(new.best_ball, old.best_ball)
            and float(np.max(np.abs(new.slack - old.slack))) <= 1e-12
        )
        t_new = [t / batch for t in _time(lambda Q=Q: union.query(Q), repeats)]
        t_old = [
            t / batch
            for t in _time(
                lambda Q=Q: union_membership(guard.hull_.index, guard.radii_, Q), repeats
            )
        ]
        rows.append(
            {
                "batch": batch,
                "matrix scan ms/query": stats(t_new),
                "range search ms/query": stats(t_old),
                "speedup": float(np.median(t_old) / np.median(t_new)),
                "identical answers": "yes" if same else "NO",
            }
        )
        print(rows[-1], flush=True)
    summary = {
        f"batch {r['batch']}": f"{r['speedup']:.2f}x ({r['identical answers']})" for r in rows
    }
    write_results(
        "union",
        rows,
        args.out_dir,
        title="Union of learned regions per query",
        summary=summary,
        config={"quick": args.quick, "queries": n, "N": len(guard.radii_)},
        notes=[
            "speedup = range-search median / matrix-scan median, same run, same "
            "queries; identical answers = same memberships, counts, best balls and "
            "slacks (to 1e-12)."
        ],
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
