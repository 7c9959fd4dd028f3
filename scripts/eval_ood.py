#!/usr/bin/env python
"""Measure the OOD peers (guard.peers) and the guard's geometry side by side; print Markdown.

Every method scores the same penultimate features of the same model. Peers and the guard are
fitted on in-distribution training data only (a seeded subset of ``--n-train`` Fashion-MNIST
training images, or the training features of an existing artifact with ``--artifact``).

* Far OOD (default model, 10 classes): ID = ``--n-id`` Fashion-MNIST test images against
  handwritten digits (1,797), uniform noise (1,000), Gaussian noise (1,000), constant images (256).
* Near OOD (``--near-model``, trained on classes 0-7 by
  ``scripts/train_default_model.py --classes 0,1,2,3,4,5,6,7 --name fmnist_resnet_8cls``):
  ID = test images of classes 0-7 against the test images of the held-out classes 8 and 9.
* Calibration: each score's threshold for a 5% false-abstain rate comes from ``--n-calib``
  held-out training images (split conformal, ``guard.calibrate.upper_threshold``); the tables
  give the realised rate on the ID test images and the detection rate on each OOD set.
* The guard's combined score (``guard.ood.OODScorer``: hull distance, exact-margin fDBD and
  Mahalanobis on a standard-normal scale, weighted for the least ID variance) is fitted on the
  same training subset and the same held-out calibration images (half fit the combination, half
  give the conformal p-values; never test or OOD images). It abstains where ``p_value < --rate``;
  its row in the calibration table is that rule, with a Clopper-Pearson 95% interval of the
  realised false-abstain rate on the ID test images and the 95% range that rate would have if
  test and calibration images were exchangeable (beta-binomial: it also counts the randomness
  of the calibration split). A last table compares it with the best peer on every set.
* Covariate shift (reported, not OOD): Fashion-MNIST test images inverted, rotated by 90 degrees
  and blurred: accuracy, how often each method abstains at its calibrated threshold, and the
  error rate of the abstained vs the accepted inputs.

Metrics (guard.evaluation): AUROC, FPR at 95% TPR and AUPR, with OOD as the positive class.
Run from the repository root (about 5 minutes on 2 cores with the defaults):

    .venv/bin/python scripts/eval_ood.py --n-id 2000 --n-train 20000
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from guard import evalsets  # noqa: E402
from guard.calibrate import upper_threshold  # noqa: E402
from guard.core import Guard  # noqa: E402
from guard.evaluation import aupr, auroc, fpr_at_95_tpr, realised_rate  # noqa: E402
from guard.model import OnnxClassifier  # noqa: E402
from guard.ood import MIN_CALIB, OODScorer  # noqa: E402
from guard.peers import REGISTRY  # noqa: E402

ASSETS = REPO_ROOT / "guard" / "assets"
COMBINED = "combined"  # the guard's OODScorer: not a peer, fitted with the calibration split
METHODS = ["msp", "energy", "mahalanobis", "knn", "vim", "fdbd", "ambiguity", "hull", COMBINED]
LABELS = {
    "msp": "MSP", "energy": "Energy", "mahalanobis": "Mahalanobis", "knn": "deep-kNN (k=50)",
    "vim": "ViM", "fdbd": "fDBD", "ambiguity": "raw ambiguity (d_hull - d_min)",
    "hull": "hull distance", COMBINED: "**guard (combined)**",
}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n-id", type=int, default=2000, help="ID test images (default 2000)")
    p.add_argument("--n-train", type=int, default=20000,
                   help="training images the peers and the guard are fitted on (default 20000)")
    p.add_argument("--n-calib", type=int, default=2000,
                   help="held-out training images for the 5%% thresholds (default 2000; 0: skip)")
    p.add_argument("--n-shift", type=int, default=1000,
                   help="test images per covariate shift (default 1000; 0: skip)")
    p.add_argument("--rate", type=float, default=0.05, help="target false-abstain rate")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--model", type=Path, default=ASSETS / "fmnist_resnet.onnx")
    p.add_argument("--near-model", type=Path, default=ASSETS / "fmnist_resnet_8cls.onnx",
                   help="model trained on a subset of the classes (skipped if missing)")
    p.add_argument("--artifact", type=Path, default=None,
                   help="use this fitted artifact (its model and training features) for the "
                        "far-OOD and shift tables instead of fitting on --n-train images")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--ood-components", default=",".join(OODScorer().components),
                   help="components of the combined score (guard.ood.COMPONENTS)")
    p.add_argument("--ood-combine", default=OODScorer().combine,
                   help="combination rule of the combined score (guard.ood.COMBINE)")
    p.add_argument("--json", type=Path, default=None, help="also write all numbers here")
    return p.parse_args(argv)


class Setup:
    """One model with its fitted peers and guard, held-out calibration thresholds, and the
    guard's combined OOD score (fitted in :meth:`calibrate`: it needs held-out ID data)."""

    def __init__(self, model: OnnxClassifier, methods: list[str], guard: Guard,
                 train_feats: np.ndarray, train_labels: np.ndarray | None,
                 ood: OODScorer | None = None) -> None:
        self.model, self.guard = model, guard
        self.train_feats, self.train_labels = train_feats, train_labels
        self.ood = ood
        self.methods = [m for m in methods if m != COMBINED]  # combined joins once fitted
        self.dets = {}
        for m in self.methods:
            det = REGISTRY[m]()
            if det.needs_guard:
                det.fit_guard(guard)
            else:
                det.fit(train_feats, train_labels, model.W, model.b)
            self.dets[m] = det
        self.thresholds: dict[str, float] = {}
        self.rate: float | None = None

    def score(self, x: np.ndarray, what: str) -> dict[str, np.ndarray]:
        t = time.perf_counter()
        logits, feats = self.model.run(x)
        out: dict[str, np.ndarray] = {"pred": logits.argmax(1)}
        need_guard = self.ood is not None or any(self.dets[m].needs_guard for m in self.methods)
        s = self.guard.score_features(feats, logits) if need_guard else None
        for m, det in self.dets.items():
            out[m] = det.score(s) if det.needs_guard else det.score(feats, logits)
        if self.ood is not None:
            if hasattr(self.ood, "calib_scores_"):
                out[COMBINED], out["_p"] = self.ood.score_guard(s, feats)
            else:  # the calibration split itself: keep what fitting the combination needs
                out["_calib"] = {"features": feats, "logits": s.logits, "hull": s.hull_upper,
                                 "d_min": s.d_min, "margins": s.margins}
        log(f"  scored {what}: {len(x)} inputs in {time.perf_counter() - t:.0f} s")
        return out

    def calibrate(self, x_calib: np.ndarray, rate: float) -> None:
        s = self.score(x_calib, "calibration split")
        self.thresholds = {m: upper_threshold(s[m], rate) for m in self.methods}
        self.rate = rate
        if self.ood is not None:
            if len(x_calib) < MIN_CALIB:
                log(f"  combined score skipped: needs >= {MIN_CALIB} calibration images")
                self.ood = None
                return
            t = time.perf_counter()
            self.ood.fit(self.train_feats, self.train_labels, self.model.W, self.model.b,
                         s["_calib"])
            self.methods.append(COMBINED)
            log(f"  fitted the combined score {self.ood!r} (weights "
                f"{np.round(self.ood.weights_, 3).tolist()}) in {time.perf_counter() - t:.1f} s")

    def abstains(self, m: str, s: dict[str, np.ndarray]) -> np.ndarray | None:
        """Boolean abstain decisions of method ``m`` at the calibrated rate (None: uncalibrated)."""
        if m == COMBINED:
            return s["_p"] < self.rate
        if m in self.thresholds:
            return s[m] > self.thresholds[m]
        return None


def _scorer(methods: list[str], components: str, combine: str) -> OODScorer | None:
    if COMBINED not in methods:
        return None
    return OODScorer(tuple(c.strip() for c in components.split(",") if c.strip()), combine)


def fit_setup(model_path: Path, methods: list[str], n_train: int, n_calib: int, rate: float,
              seed: int, classes: list[int] | None = None, ood: OODScorer | None = None) -> Setup:
    model = OnnxClassifier(model_path)
    x, y = evalsets.fmnist_train(None, classes=classes)
    if classes is not None:  # remap to the model's 0..k-1 label order
        remap = np.full(10, -1, dtype=np.int64)
        remap[classes] = np.arange(len(classes))
        y = remap[y]
    perm = np.random.default_rng(seed).permutation(len(x))
    fit_idx = np.sort(perm[:n_train])
    cal_idx = np.sort(perm[n_train:n_train + n_calib])
    t = time.perf_counter()
    _, feats = model.run(x[fit_idx])
    guard = Guard(calib_fraction=0).fit_features(feats, model.W, model.b, y[fit_idx])
    setup = Setup(model, methods, guard, feats, y[fit_idx], ood)
    log(f"  fitted {model_path.name} on {len(fit_idx)} training images in "
        f"{time.perf_counter() - t:.0f} s")
    if n_calib:
        setup.calibrate(x[cal_idx], rate)
    return setup


def artifact_setup(path: Path, methods: list[str], n_calib: int, rate: float, seed: int,
                   ood: OODScorer | None = None) -> Setup:
    from guard.artifact import load_artifact

    guard = load_artifact(path)
    setup = Setup(guard.model_, methods, guard, guard.train_features_, guard.train_labels_, ood)
    log(f"  loaded {path}: {len(guard.train_features_)} training features")
    if n_calib:  # the artifact's held-out split: training images it was not fitted on
        x, _ = evalsets.fmnist_train(None)
        rest = np.setdiff1d(np.arange(len(x)), guard.train_index_)
        pick = np.sort(np.random.default_rng(seed).permutation(rest)[:n_calib])
        setup.calibrate(x[pick], rate)
    return setup


def metric_rows(setup: Setup, s_id: dict, s_ood: dict[str, dict]) -> dict:
    res: dict = {}
    for m in setup.methods:
        res[m] = {}
        for name, s in s_ood.items():
            r = {"auroc": auroc(s_id[m], s[m]), "fpr95": fpr_at_95_tpr(s_id[m], s[m]),
                 "aupr": aupr(s_id[m], s[m])}
            ab = setup.abstains(m, s)
            if ab is not None:
                r["detected"] = float(ab.mean())
            res[m][name] = r
        ab = setup.abstains(m, s_id)
        if ab is not None:
            res[m]["_false_abstain"] = float(ab.mean())
            res[m]["_false_abstain_ci"] = clopper_pearson(int(ab.sum()), ab.size)
            if m == COMBINED:
                res[m]["_false_abstain_range"] = conformal_range(
                    setup.ood.calib_scores_.size, ab.size, setup.rate)
                res[m]["_n_pvalue"] = int(setup.ood.calib_scores_.size)
    if "ambiguity" in setup.methods:  # the paper's own threshold: abstain when d_min < d_hull
        res["_paper"] = {"false_abstain": realised_rate(s_id["ambiguity"], 0.0),
                         **{n: realised_rate(s["ambiguity"], 0.0) for n, s in s_ood.items()}}
    return res


def clopper_pearson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Exact binomial confidence interval of a rate ``k / n``."""
    from scipy.stats import beta

    a = (1 - level) / 2
    lo = 0.0 if k == 0 else float(beta.ppf(a, k, n - k + 1))
    hi = 1.0 if k == n else float(beta.ppf(1 - a, k + 1, n - k))
    return lo, hi


def conformal_range(n_cal: int, m: int, rate: float, level: float = 0.95) -> tuple[float, float]:
    """Central ``level`` range of the false-abstain rate on ``m`` test inputs exchangeable with
    ``n_cal`` calibration inputs, abstaining at ``p < rate``: the count is beta-binomial with
    ``(l, n_cal + 1 - l)``, ``l = ceil(rate (n_cal + 1)) - 1`` (the rate given the calibration
    set is Beta distributed; Angelopoulos & Bates 2021, sec. 3.2). Wider than the binomial
    interval, which ignores the randomness of the calibration set."""
    from scipy.stats import betabinom

    l_ = math.ceil(rate * (n_cal + 1) - 1e-9) - 1
    d = betabinom(m, l_, n_cal + 1 - l_)
    a = (1 - level) / 2
    return float(d.ppf(a)) / m, float(d.ppf(1 - a)) / m


def table(res: dict, methods: list[str], sets: list[str], key: str, title: str,
          fmt: str = "{:.4f}", best=max) -> str:
    lines = [f"**{title}**", "", "| method | " + " | ".join(sets) + " | mean |",
             "|---" * (len(sets) + 2) + "|"]
    vals = {m: [res[m][s][key] for s in sets] for m in methods}
    top = [fmt.format(best(vals[m][j] for m in methods)) for j in range(len(sets))]
    for m in methods:  # bold: the best value as printed (ties included)
        cells = [(f"**{fmt.format(v)}**" if fmt.format(v) == top[j] else fmt.format(v))
                 for j, v in enumerate(vals[m])]
        lines.append(f"| {LABELS[m]} | " + " | ".join(cells) + f" | {fmt.format(np.mean(vals[m]))} |")
    return "\n".join(lines)


def calib_table(res: dict, methods: list[str], sets: list[str], rate: float, n_id: int) -> str:
    lines = [f"**Threshold calibrated for a {100 * rate:g}% false-abstain rate on held-out "
             f"training images: realised false-abstain rate on the {n_id} ID test images, "
             f"detection rate on each OOD set**", "",
             "| method | false abstain (ID) | 95% CI | " + " | ".join(sets) + " |",
             "|---" * (len(sets) + 3) + "|"]
    for m in methods:
        if "_false_abstain" not in res[m]:
            continue
        cells = [f"{100 * res[m][s]['detected']:.1f}%" for s in sets]
        lo, hi = res[m]["_false_abstain_ci"]
        lines.append(f"| {LABELS[m]} | {100 * res[m]['_false_abstain']:.1f}% | "
                     f"[{100 * lo:.1f}, {100 * hi:.1f}]% | " + " | ".join(cells) + " |")
    if "_paper" in res:
        p = res["_paper"]
        lines.append("| raw ambiguity at the paper's threshold 0 | "
                     f"{100 * p['false_abstain']:.1f}% | | "
                     + " | ".join(f"{100 * p[s]:.1f}%" for s in sets) + " |")
    if COMBINED in methods:
        r = res[COMBINED]
        lo, hi = r["_false_abstain_range"]
        inside = lo <= r["_false_abstain"] <= hi
        lines += ["", f"The combined score abstains where its conformal p-value is below "
                      f"{rate:g}; the peers where their score exceeds their split-conformal "
                      f"threshold. 95% CI: Clopper-Pearson interval of the realised rate. If test "
                      f"and calibration inputs were exchangeable, the combined score's realised "
                      f"rate would lie in [{100 * lo:.1f}, {100 * hi:.1f}]% with probability 95% "
                      f"(beta-binomial: test sampling and the {r['_n_pvalue']} p-value calibration "
                      f"inputs); it is {100 * r['_false_abstain']:.1f}%: "
                      f"{'inside' if inside else '**outside**'}."]
    return "\n".join(lines)


def report(res: dict, methods: list[str], sets: list[str], heading: str, rate: float,
           n_id: int) -> str:
    parts = [heading, "",
             table(res, methods, sets, "auroc", "AUROC (higher is better; OOD positive)"), "",
             table(res, methods, sets, "fpr95",
                   "FPR at 95% TPR (fraction of ID flagged when 95% of OOD is; lower is better)",
                   best=min), "",
             table(res, methods, sets, "aupr", "AUPR, OOD positive (higher is better)"), ""]
    if any("_false_abstain" in res[m] for m in methods):
        parts += [calib_table(res, methods, sets, rate, n_id), ""]
    if COMBINED in methods:
        parts += [versus_table(res, methods, sets), ""]
    return "\n".join(parts)


def versus_table(res: dict, methods: list[str], sets: list[str]) -> str:
    """The combined score against the best peer on every set, per metric."""
    peers = [m for m in methods if m != COMBINED]
    lines = ["**guard (combined) vs the best peer on each set** (AUROC higher, FPR@95 lower is "
             "better; Δ = combined − best peer)", "",
             "| set | combined AUROC | best peer AUROC | Δ | combined FPR@95 | best peer FPR@95 "
             "| Δ | at least as good on both |", "|---" * 8 + "|"]
    for s in sets:
        c = res[COMBINED][s]
        pa = max(peers, key=lambda m: res[m][s]["auroc"])
        pf = min(peers, key=lambda m: res[m][s]["fpr95"])
        ba, bf = res[pa][s]["auroc"], res[pf][s]["fpr95"]
        ok = c["auroc"] >= ba and c["fpr95"] <= bf
        lines.append(f"| {s} | {c['auroc']:.4f} | {ba:.4f} ({LABELS[pa]}) | "
                     f"{c['auroc'] - ba:+.4f} | {c['fpr95']:.3f} | {bf:.3f} ({LABELS[pf]}) | "
                     f"{c['fpr95'] - bf:+.3f} | {'yes' if ok else '**no**'} |")
    return "\n".join(lines)


def shift_report(setup: Setup, n_shift: int, seed: int) -> tuple[str, dict]:
    out: dict = {}
    lines = ["### Covariate shift (reported, not counted as OOD)", "",
             f"{n_shift} Fashion-MNIST test images per shift. Abstain rate of each method at its "
             "calibrated threshold, and in brackets the error rate of the abstained / accepted "
             "inputs.", ""]
    names = ["none", *evalsets.COVARIATE_SHIFT]
    rows = {m: [] for m in setup.methods}
    acc_row = []
    for name in names:
        if name == "none":
            x, y = evalsets.fmnist_test(n_shift, seed=seed + 1)
        else:
            x, y = evalsets.COVARIATE_SHIFT[name](n_shift, seed=seed + 1)
        s = setup.score(x, f"shift {name}")
        wrong = s["pred"] != y
        acc_row.append(f"{100 * (1 - wrong.mean()):.1f}%")
        out[name] = {"accuracy": float(1 - wrong.mean())}
        for m in setup.methods:
            ab = setup.abstains(m, s)
            if ab is None:
                continue
            ea = wrong[ab].mean() if ab.any() else float("nan")
            ek = wrong[~ab].mean() if (~ab).any() else float("nan")
            out[name][m] = {"abstain": float(ab.mean()), "err_abstained": float(ea),
                            "err_accepted": float(ek)}
            pct = lambda v: "–" if np.isnan(v) else f"{100 * v:.0f}%"  # noqa: E731
            rows[m].append(f"{100 * ab.mean():.1f}% ({pct(ea)} / {pct(ek)})")
    lines += ["| method | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|",
              "| model accuracy | " + " | ".join(acc_row) + " |"]
    for m in setup.methods:
        if rows[m]:
            lines.append(f"| {LABELS[m]} | " + " | ".join(rows[m]) + " |")
    return "\n".join(lines) + "\n", out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in REGISTRY and m != COMBINED]
    if unknown:
        raise SystemExit(f"unknown methods {unknown}; choose from {[*sorted(REGISTRY), COMBINED]}")
    mk = lambda: _scorer(methods, args.ood_components, args.ood_combine)  # noqa: E731
    t0 = time.perf_counter()
    results: dict = {"args": {k: str(v) for k, v in vars(args).items()}}
    out = ["# OOD detection: guard vs peers on the same features", ""]

    log("far OOD: default model")
    if args.artifact is not None:
        setup = artifact_setup(args.artifact, methods, args.n_calib, args.rate, args.seed, mk())
        fitted_on = f"the artifact {args.artifact} ({len(setup.guard.train_features_)} training features)"
    else:
        setup = fit_setup(args.model, methods, args.n_train, args.n_calib, args.rate, args.seed,
                          ood=mk())
        fitted_on = f"{args.n_train} Fashion-MNIST training images"
    x_id, _ = evalsets.fmnist_test(args.n_id, seed=args.seed)
    s_id = setup.score(x_id, "ID test")
    far = {name: setup.score(load(), name) for name, load in evalsets.FAR_OOD.items()}
    res = metric_rows(setup, s_id, far)
    results["far"] = res
    sizes = ", ".join(f"{n} {len(far[n]['pred'])}" for n in far)
    out.append(report(res, setup.methods, list(far),
                      f"## Far OOD: {args.model.name if args.artifact is None else 'artifact'}, "
                      f"fitted on {fitted_on}; ID = {args.n_id} Fashion-MNIST test images; OOD = "
                      f"{sizes}", args.rate, args.n_id))

    if args.near_model.is_file():
        meta_path = args.near_model.with_suffix(".json")
        meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
        classes = meta.get("classes", list(range(8)))
        held = [c for c in range(10) if c not in classes]
        log(f"near OOD: {args.near_model.name}, classes {classes}, held out {held}")
        near = fit_setup(args.near_model, methods, args.n_train, args.n_calib, args.rate,
                         args.seed, classes=classes, ood=mk())
        xi, _ = evalsets.fmnist_test(args.n_id, seed=args.seed, classes=classes)
        xo, _ = evalsets.fmnist_test(args.n_id, seed=args.seed, classes=held)
        sn_id, sn_ood = near.score(xi, "near ID test"), near.score(xo, "held-out classes")
        name = "classes " + "/".join(map(str, held))
        res_n = metric_rows(near, sn_id, {name: sn_ood})
        results["near"] = res_n
        out.append(report(res_n, near.methods, [name],
                          f"## Near OOD: {args.near_model.name} (classes {classes}), fitted on "
                          f"{args.n_train} training images of those classes; ID = {len(xi)} test "
                          f"images of those classes; OOD = {len(xo)} test images of classes "
                          f"{held}", args.rate, len(xi)))
    else:
        log(f"near OOD skipped: {args.near_model} not found")
        out.append(f"(near OOD skipped: {args.near_model} not found)\n")

    if args.n_shift and setup.thresholds:
        log("covariate shift")
        text, res_s = shift_report(setup, args.n_shift, args.seed)
        results["shift"] = res_s
        out.append(text)

    out.append(f"_{time.perf_counter() - t0:.0f} s; command: `python {' '.join(sys.argv)}`_")
    print("\n".join(out))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=float) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
