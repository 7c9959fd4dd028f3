"""A/B of two source checkouts in one run: ``Guard.score_features`` time per image.

Each checkout (a directory holding ``guard/`` with its compiled core built, e.g. a
``git worktree add /tmp/old REV`` followed by ``python setup.py build_ext --inplace`` there) is
timed in its own process, the two alternating ``--pairs`` times, on the same artifact and the
same Fashion-MNIST test images: CPU time on one thread, or with ``--threads 2`` wall time with
the geometry on two threads (as the server runs it). Every process loads the artifact with its
own code (the artifact's arrays do not depend on it), so it measures what changed in the code
between the checkouts, not in the fit. Per batch size it prints the median per checkout and the
median of the paired ratios (second / first): the machine is shared and noisy, and pairs that
ran seconds apart see about the same load.

Usage::

    python bench/checkouts.py /tmp/old . [--artifact DIR] [--pairs 6] [--batches 64 8]
        [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import stats, write_results  # noqa: E402


def child(root: str, artifact: str, batches: list[int], n: int, threads: int) -> dict[str, float]:
    """In a fresh process: ms per image of ``score_features`` (as served, and with the
    spherical hull) at each batch size, with the code of ``root``: CPU time with one geometry
    thread, wall time with more."""
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = "1"
    sys.path.insert(0, str(Path(root).resolve()))
    import guard
    from guard.artifact import load_artifact
    from guard.evaluation import sets

    if not Path(guard.__file__).resolve().is_relative_to(Path(root).resolve()):
        raise SystemExit(f"bench.checkouts: imported guard from {guard.__file__}, not {root}")
    g = load_artifact(Path(artifact), device="cpu")
    g.n_jobs = threads
    clock = time.process_time if threads == 1 else time.perf_counter
    x = sets.fmnist_test(n, seed=1)[0]
    logits, F = g.require_model().run(x)
    g.score_features(F[: batches[0]], logits[: batches[0]])  # warm-up
    out = {}
    for B in batches:
        for sphere in (False, True):
            t0 = clock()
            for lo in range(0, n, B):
                g.score_features(F[lo : lo + B], logits[lo : lo + B], sphere=sphere)
            key = f"batch {B}, {'all' if sphere else 'as served'}"
            out[key] = (clock() - t0) * 1e3 / n
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python bench/checkouts.py", description=__doc__)
    p.add_argument("first", help="the checkout to compare against (e.g. the previous commit)")
    p.add_argument("second", help="the checkout compared (e.g. the working tree: .)")
    p.add_argument("--artifact", default="artifacts/fmnist_resnet")
    p.add_argument("--pairs", type=int, default=6)
    p.add_argument("--batches", type=int, nargs="+", default=[64, 8])
    p.add_argument("--images", type=int, default=256)
    p.add_argument(
        "--threads", type=int, default=1, help="geometry threads (1: CPU time; more: wall time)"
    )
    p.add_argument("--name", default="checkouts")
    p.add_argument("--out-dir", default="bench/results")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        root, artifact, n, threads, *bs = argv[1:]
        print(json.dumps(child(root, artifact, [int(b) for b in bs], int(n), int(threads))))
        return 0
    args = build_parser().parse_args(argv)
    if args.pairs < 1 or args.images < max(args.batches) or min(args.batches) < 1:
        raise SystemExit("bench.checkouts: error: need --pairs >= 1 and 1 <= batches <= --images")
    if args.threads < 1:
        raise SystemExit("bench.checkouts: error: need --threads >= 1")
    artifact = str(Path(args.artifact).resolve())
    runs: dict[str, list[dict[str, float]]] = {args.first: [], args.second: []}
    for i in range(args.pairs):
        for root in (args.first, args.second):
            cmd = [sys.executable, __file__, "--child", root, artifact, str(args.images)]
            cmd.append(str(args.threads))
            res = subprocess.run(
                cmd + [str(b) for b in args.batches], capture_output=True, text=True, check=False
            )
            if res.returncode != 0:
                raise SystemExit(f"bench.checkouts: {root} failed:\n{res.stderr[-2000:]}")
            runs[root].append(json.loads(res.stdout.strip().splitlines()[-1]))
            print(f"pair {i + 1}/{args.pairs} {root}: {runs[root][-1]}", flush=True)
    rows, summary = [], {}
    for key in runs[args.first][0]:
        a = np.array([r[key] for r in runs[args.first]])
        b = np.array([r[key] for r in runs[args.second]])
        ratio = float(np.median(b / a))
        rows.append(
            {
                "what": key,
                f"{args.first} ms/image": stats(a),
                f"{args.second} ms/image": stats(b),
                "paired median, second / first": ratio,
            }
        )
        summary[f"{key}: second / first (paired median)"] = ratio
    timing = "CPU time" if args.threads == 1 else "wall time"
    threads = "one thread" if args.threads == 1 else f"the geometry on {args.threads} threads"
    write_results(
        args.name,
        rows,
        args.out_dir,
        title=f"A/B of two checkouts: Guard.score_features {timing} per image",
        summary=summary,
        config=vars(args),
        notes=[
            f"{timing} per image, {threads}; each checkout in its own process, "
            "the two alternating; 'as served': without the spherical hull (the server computes "
            "it only when a request asks), 'all': with it.",
        ],
    )
    for k, v in summary.items():
        print(f"{k}: {v:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
