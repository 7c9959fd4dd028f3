#!/usr/bin/env python
"""Measure the OOD peers (guard.detectors) and the guard's geometry side by side; print Markdown.

Every method scores the same penultimate features of the same model. Peers and the guard are
fitted on in-distribution training data only (a seeded subset of ``--n-train`` Fashion-MNIST
training images, or the training features of an existing artifact with ``--artifact``).

* Far OOD (default model, 10 classes): ID = ``--n-id`` Fashion-MNIST test images against
  handwritten digits (1,797), uniform noise (1,000), Gaussian noise (1,000), constant images (256).
* Near OOD (``--near-model``, trained on classes 0-7 by
  ``scripts/train_default_model.py --classes 0,1,2,3,4,5,6,7 --name fmnist_resnet_8cls``):
  ID = test images of classes 0-7 against the test images of the held-out classes 8 and 9.
* Calibration: each score's threshold for a 5% false-abstain rate comes from ``--n-calib``
  held-out training images (split conformal, ``guard.detectors.upper_threshold``); the tables
  give the realised rate on the ID test images and the detection rate on each OOD set.
* The guard's combined score (``guard.detectors.CombinedScore`` with its defaults: the hull
  distance of the L2-normalised features, the raw hull distance, exact-margin fDBD and ViM on a
  standard-normal scale, summed with fixed equal weights) is fitted on the
  same training subset and the same held-out calibration images (half fit the combination, half
  give the conformal p-values; never test or OOD images). It abstains where ``p_value < --rate``;
  its row in the calibration table is that rule, with a Clopper-Pearson 95% interval of the
  realised false-abstain rate on the ID test images and the 95% range that rate would have if
  test and calibration images were exchangeable (beta-binomial: it also counts the randomness
  of the calibration split). A last table compares it with the best peer on every set.
* Covariate shift (reported, not OOD): Fashion-MNIST test images inverted, rotated by 90 degrees
  and blurred: accuracy, how often each method abstains at its calibrated threshold, and the
  error rate of the abstained vs the accepted inputs.

Metrics (guard.evaluation.metrics): AUROC, FPR at 95% TPR and AUPR, with OOD as the positive class.
Run from the repository root (about 1 minute on 2 cores with the defaults):

    .venv/bin/python scripts/eval_ood.py --n-id 2000 --n-train 20000
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from guard.detectors import COMBINE, COMPONENTS, DEFAULT_COMPONENTS, REGISTRY, CombinedScore
from guard.detectors.combined import DEFAULT_COMBINE
from guard.evaluation import sets as evalsets
from guard.evaluation.ood import (
    COMBINED,
    METHODS,
    artifact_setup,
    fit_setup,
    metric_rows,
    report,
    shift_report,
    shift_sets,
)

log = logging.getLogger("eval_ood")

ASSETS = REPO_ROOT / "guard" / "assets"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n-id", type=int, default=2000, help="ID test images (default 2000)")
    p.add_argument(
        "--n-train",
        type=int,
        default=20000,
        help="training images the peers and the guard are fitted on (default 20000)",
    )
    p.add_argument(
        "--n-calib",
        type=int,
        default=2000,
        help="held-out training images for the 5%% thresholds (default 2000; 0: skip)",
    )
    p.add_argument(
        "--n-shift",
        type=int,
        default=1000,
        help="test images per covariate shift (default 1000; 0: skip)",
    )
    p.add_argument("--rate", type=float, default=0.05, help="target false-abstain rate")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--model", type=Path, default=ASSETS / "fmnist_resnet.onnx")
    p.add_argument(
        "--near-model",
        type=Path,
        default=ASSETS / "fmnist_resnet_8cls.onnx",
        help="model trained on a subset of the classes (skipped if missing)",
    )
    p.add_argument(
        "--artifact",
        type=Path,
        default=None,
        help="use this fitted artifact (its model and training features) for the "
        "far-OOD and shift tables instead of fitting on --n-train images",
    )
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument(
        "--ood-components",
        default=",".join(DEFAULT_COMPONENTS),
        help=f"components of the combined score, from {','.join(COMPONENTS)}",
    )
    p.add_argument(
        "--ood-combine",
        default=DEFAULT_COMBINE,
        help=f"combination rule of the combined score, one of {','.join(COMBINE)}",
    )
    p.add_argument("--json", type=Path, default=None, help="also write all numbers here")
    return p.parse_args(argv)


def _scorer(methods: list[str], components: str, combine: str) -> CombinedScore | None:
    if COMBINED not in methods:
        return None
    return CombinedScore(tuple(c.strip() for c in components.split(",") if c.strip()), combine)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in REGISTRY and m != COMBINED]
    if unknown:
        raise SystemExit(f"unknown methods {unknown}; choose from {[*sorted(REGISTRY), COMBINED]}")
    mk = lambda: _scorer(methods, args.ood_components, args.ood_combine)  # noqa: E731
    t0 = time.perf_counter()
    results: dict = {"args": {k: str(v) for k, v in vars(args).items()}}
    out = ["# OOD detection: guard vs peers on the same features", ""]

    log.info("far OOD: default model")
    if args.artifact is not None:
        setup = artifact_setup(args.artifact, methods, args.n_calib, args.rate, args.seed, mk())
        n_art = len(setup.guard.train_features_)
        fitted_on = f"the artifact {args.artifact} ({n_art} training features)"
    else:
        setup = fit_setup(
            args.model, methods, args.n_train, args.n_calib, args.rate, args.seed, ood=mk()
        )
        fitted_on = f"{args.n_train} Fashion-MNIST training images"
    x_id, _ = evalsets.fmnist_test(args.n_id, seed=args.seed)
    s_id = setup.score(x_id, "ID test")
    far = {name: setup.score(load(), name) for name, load in evalsets.FAR_OOD.items()}
    res = metric_rows(setup, s_id, far)
    results["far"] = res
    sizes = ", ".join(f"{n} {len(far[n])}" for n in far)
    out.append(
        report(
            res,
            setup.methods,
            list(far),
            f"## Far OOD: {args.model.name if args.artifact is None else 'artifact'}, "
            f"fitted on {fitted_on}; ID = {args.n_id} Fashion-MNIST test images; OOD = "
            f"{sizes}",
            args.rate,
            args.n_id,
        )
    )

    if args.near_model.is_file():
        meta_path = args.near_model.with_suffix(".json")
        meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
        classes = meta.get("classes", list(range(8)))
        held = [c for c in range(10) if c not in classes]
        log.info("near OOD: %s, classes %s, held out %s", args.near_model.name, classes, held)
        near = fit_setup(
            args.near_model,
            methods,
            args.n_train,
            args.n_calib,
            args.rate,
            args.seed,
            classes=classes,
            ood=mk(),
        )
        xi, _ = evalsets.fmnist_test(args.n_id, seed=args.seed, classes=classes)
        xo, _ = evalsets.fmnist_test(args.n_id, seed=args.seed, classes=held)
        sn_id, sn_ood = near.score(xi, "near ID test"), near.score(xo, "held-out classes")
        name = "classes " + "/".join(map(str, held))
        res_n = metric_rows(near, sn_id, {name: sn_ood})
        results["near"] = res_n
        out.append(
            report(
                res_n,
                near.methods,
                [name],
                f"## Near OOD: {args.near_model.name} (classes {classes}), fitted on "
                f"{args.n_train} training images of those classes; ID = {len(xi)} test "
                f"images of those classes; OOD = {len(xo)} test images of classes "
                f"{held}",
                args.rate,
                len(xi),
            )
        )
    else:
        log.info("near OOD skipped: %s not found", args.near_model)
        out.append(f"(near OOD skipped: {args.near_model} not found)\n")

    if args.n_shift and setup.thresholds:
        log.info("covariate shift")
        text, res_s = shift_report(setup, shift_sets(args.n_shift, args.seed))
        results["shift"] = res_s
        out.append(text)

    out.append(f"_{time.perf_counter() - t0:.0f} s; command: `python {' '.join(sys.argv)}`_")
    print("\n".join(out))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=float) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
