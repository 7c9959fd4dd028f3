#!/usr/bin/env python
"""Run the multi-model OOD suite: every peer and every candidate abstention score of the guard on
every (model, OOD set) pair; write ``suite.md`` and ``suite.json``.

Models and sets: ``guard/evaluation/suite_data.py`` (the Fashion-MNIST default, its 8-class twin
for near OOD, models trained on 8,000 MNIST and 8,000 notMNIST images, and the 3-channel
ResNet-20; a model whose ONNX file is missing is skipped with a message). Protocol and metrics:
``guard/evaluation/suite.py``; verdict and tables: ``guard/evaluation/suite_report.py``. The
guard's default is the candidate with the best worst case (AUROC minus the best peer's, over
all pairs); the report says whether it is.

Run from the repository root (one thread per process; about 5 minutes on this 2-core machine
with the defaults, 14 before the faster hull query: the Fashion-MNIST models are fitted on
20,000 of the 60,000 training images):

    .venv/bin/python scripts/eval_ood_suite.py --out reports/ood_suite

To explore scores, ``--cache DIR`` stores each model's geometry in DIR (``.npz``, keyed by the
model file, the sizes and the seed; ``guard/evaluation/suite_cache.py``) and reuses it on the
next run: a rerun then takes seconds. The key does not cover the guard's code: delete DIR after
changing the geometry. The committed report is made without it.
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tqdm import tqdm

from guard.evaluation.suite import (
    CANDIDATES,
    DEFAULT,
    GEOMETRY,
    PEERS,
    evaluate,
    model_entry,
)
from guard.evaluation.suite_cache import prepared
from guard.evaluation.suite_data import MODELS, Sizes
from guard.evaluation.suite_report import render, verdicts

log = logging.getLogger("eval_ood_suite")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    names = [m.name for m in MODELS]
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--models", default=",".join(names), help=f"comma-separated, from {','.join(names)}"
    )
    p.add_argument("--n-train", type=int, default=20_000, help="Fashion-MNIST training images")
    p.add_argument("--n-id", type=int, default=2_000, help="ID test inputs per model")
    p.add_argument("--n-ood", type=int, default=2_000, help="inputs per OOD set (at most)")
    p.add_argument("--rate", type=float, default=0.05, help="target false-abstain rate")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=REPO_ROOT / "reports" / "ood_suite")
    p.add_argument(
        "--cache",
        type=Path,
        default=None,
        help="directory caching each model's geometry (reused when model file, sizes and seed "
        "match; delete it after changing the guard's geometry code); default: no cache",
    )
    args = p.parse_args(argv)
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = sorted(set(args.models) - set(names))
    if unknown:
        p.error(f"unknown models {unknown}; choose from {names}")
    for name in ("n_train", "n_id", "n_ood"):
        if getattr(args, name) < 100:
            p.error(f"--{name.replace('_', '-')} must be at least 100")
    if not 0 < args.rate < 1:
        p.error("--rate must be in (0, 1)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    t0 = time.perf_counter()
    sizes = Sizes(args.n_train, args.n_id, args.n_ood, args.seed)
    res: dict = {
        "models": {},
        "peers": list(PEERS),
        "geometry": list(GEOMETRY),
        "candidates": [c.name for c in CANDIDATES],
        "components": {c.name: [list(c.components), c.combine] for c in CANDIDATES},
        "default": DEFAULT.name,
        "rate": args.rate,
        "sizes": vars(sizes),
        "skipped": {},
    }
    chosen = [m for m in MODELS if m.name in args.models]
    for model in tqdm(chosen, desc="suite models"):
        if not model.path.is_file():
            log.warning("skipped %s: %s not found", model.name, model.path)
            res["skipped"][model.name] = f"{model.onnx} not found"
            continue
        ev = prepared(model, sizes, args.cache)
        res["models"][model.name] = model_entry(ev, evaluate(ev, rate=args.rate))
    if not res["models"]:
        raise SystemExit("no suite model was found")
    seconds = time.perf_counter() - t0
    command = shlex.join(["python", "scripts/eval_ood_suite.py", *(argv or sys.argv[1:])])
    res["command"], res["seconds"] = command, round(seconds, 1)
    best = verdicts(res)[0]
    res["best_worst_case"] = best.name
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "suite.json").write_text(json.dumps(res, indent=1) + "\n")
    (args.out / "suite.md").write_text(render(res, command, seconds))
    print(f"wrote {args.out / 'suite.md'}; best worst case: {best.name} ({best.worst:+.4f})")
    if best.name != DEFAULT.name:
        print(f"note: the default ({DEFAULT.name}) is not the best worst case on this run")
    return 0


if __name__ == "__main__":
    sys.exit(main())
