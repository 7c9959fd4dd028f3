"""Out-of-distribution evaluation: the guard and its peers on the same features, side by side.

Shared by ``scripts/eval_ood.py`` (the full benchmark, near OOD included) and ``guard report``.
A :class:`Setup` holds one model with its fitted peers and the guard's combined OOD score
(:mod:`guard.detectors`: one implementation each) and the guard whose geometry the geometric
scores read; thresholds come from held-out in-distribution data (split conformal).
:func:`metric_rows` measures AUROC, FPR@95%TPR, AUPR and calibrated rates; the ``*_table``
functions render them as Markdown.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..detectors import MIN_CALIB, REGISTRY, CombinedScore, Evidence, upper_threshold
from ..errors import InputError
from ..estimator import Guard
from ..model import OnnxClassifier
from ..types import Scores
from . import sets as evalsets
from .metrics import aupr, auroc, fpr_at_95_tpr, realised_rate

log = logging.getLogger(__name__)

COMBINED = "combined"  # the guard's CombinedScore: not a peer, fitted with the calibration split
METHODS = [
    "msp",
    "energy",
    "mahalanobis",
    "knn",
    "vim",
    "fdbd",
    "ambiguity",
    "hull",
    "sphere_hull",
    COMBINED,
]
LABELS = {
    "msp": "MSP",
    "energy": "Energy",
    "mahalanobis": "Mahalanobis",
    "knn": "deep-kNN (k=50)",
    "vim": "ViM",
    "fdbd": "fDBD",
    "ambiguity": "raw ambiguity (d_hull - d_min)",
    "hull": "hull distance",
    "sphere_hull": "sphere hull distance",
    COMBINED: "**guard (combined)**",
}
_GEOMETRY = {"margins", "hull", "d_min", "sphere"}  # Evidence fields only the guard computes
#: The published detectors the guard is compared with (the rest of METHODS is its own geometry).
PEERS = ("msp", "energy", "mahalanobis", "knn", "vim", "fdbd")


@dataclass(frozen=True)
class SetScores:
    """Every method's scores of one evaluation set of N inputs.

    Attributes:
        pred: (N,) the model's predictions.
        features: (N, f) penultimate features.
        geometry: the guard's :class:`~guard.types.Scores` of the inputs, or ``None`` when no
            method reads them.
        scores: method name -> (N,) outlier scores (higher = more OOD); the combined score
            under :data:`COMBINED` once fitted.
        p_value: (N,) conformal p-values of the combined score, or ``None``.
    """

    pred: np.ndarray
    features: np.ndarray
    geometry: Scores | None
    scores: dict[str, np.ndarray]
    p_value: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.pred.shape[0])

    def require_geometry(self) -> Scores:
        """The guard's scores of the inputs (``Setup.score(..., geometry=True)`` computes them)."""
        if self.geometry is None:
            raise InputError(
                "no guard geometry was computed for this set: score it with "
                "Setup.score(x, what, geometry=True)"
            )
        return self.geometry


class Setup:
    """One model with its fitted peers and guard, held-out calibration thresholds, and the
    guard's combined OOD score (fitted in :meth:`calibrate`: it needs held-out ID data)."""

    def __init__(
        self,
        model: OnnxClassifier,
        methods: list[str],
        guard: Guard,
        train_feats: np.ndarray,
        train_labels: np.ndarray | None,
        ood: CombinedScore | None = None,
    ) -> None:
        self.model, self.guard = model, guard
        self.train_feats, self.train_labels = train_feats, train_labels
        self.ood = ood
        self.methods = [m for m in methods if m != COMBINED]  # combined joins once fitted
        self.dets = {
            m: REGISTRY[m]().fit(train_feats, train_labels, model.W, model.b) for m in self.methods
        }
        self.thresholds: dict[str, float] = {}
        self.rate: float | None = None

    def score(self, x: np.ndarray, what: str, *, geometry: bool = False) -> SetScores:
        """Every method's scores of inputs ``x`` (the model runs once, the guard at most once:
        when a method reads its geometry, or ``geometry``)."""
        t = time.perf_counter()
        logits, feats = self.model.run(x)
        need_geometry = (
            geometry
            or self.ood is not None
            or any(_GEOMETRY & set(det.needs) for det in self.dets.values())
        )
        g = self.guard.score_features(feats, logits) if need_geometry else None
        ev = (
            Evidence(features=feats, logits=logits) if g is None else Evidence.from_scores(g, feats)
        )
        scores = {m: det.score(ev) for m, det in self.dets.items()}
        p = None
        if self.ood is not None and hasattr(self.ood, "calib_scores_"):
            scores[COMBINED], p = self.ood.score(ev)
        log.info("  scored %s: %d inputs in %.0f s", what, len(x), time.perf_counter() - t)
        return SetScores(logits.argmax(1), feats, g, scores, p)

    def calibrate(self, x_calib: np.ndarray, rate: float) -> None:
        s = self.score(x_calib, "calibration split")
        self.thresholds = {m: upper_threshold(s.scores[m], rate) for m in self.methods}
        self.rate = rate
        if self.ood is not None and hasattr(self.ood, "calib_scores_"):  # fitted already
            self.methods.append(COMBINED)
        elif self.ood is not None:
            if len(x_calib) < MIN_CALIB:
                log.info("  combined score skipped: needs >= %d calibration images", MIN_CALIB)
                self.ood = None
                return
            t = time.perf_counter()
            self.ood.fit(
                self.train_feats,
                self.train_labels,
                self.model.W,
                self.model.b,
                Evidence.from_scores(s.require_geometry(), s.features),
            )
            self.methods.append(COMBINED)
            log.info(
                "  fitted the combined score %r (weights %s) in %.1f s",
                self.ood,
                np.round(self.ood.weights_, 3).tolist(),
                time.perf_counter() - t,
            )

    def abstains(self, m: str, s: SetScores) -> np.ndarray | None:
        """Boolean abstain decisions of method ``m`` at the calibrated rate (None: uncalibrated)."""
        if m == COMBINED:
            return None if s.p_value is None or self.rate is None else s.p_value < self.rate
        if m in self.thresholds:
            return s.scores[m] > self.thresholds[m]
        return None


def fit_setup(
    model_path: Path,
    methods: list[str],
    n_train: int,
    n_calib: int,
    rate: float,
    seed: int,
    classes: list[int] | None = None,
    ood: CombinedScore | None = None,
) -> Setup:
    model = OnnxClassifier(model_path)
    x, y = evalsets.fmnist_train(None, classes=classes)
    if classes is not None:  # remap to the model's 0..k-1 label order
        remap = np.full(10, -1, dtype=np.int64)
        remap[classes] = np.arange(len(classes))
        y = remap[y]
    perm = np.random.default_rng(seed).permutation(len(x))
    fit_idx = np.sort(perm[:n_train])
    cal_idx = np.sort(perm[n_train : n_train + n_calib])
    t = time.perf_counter()
    _, feats = model.run(x[fit_idx])
    guard = Guard(calib_fraction=0).fit_features(feats, model.W, model.b, y[fit_idx])
    setup = Setup(model, methods, guard, feats, y[fit_idx], ood)
    log.info(
        "  fitted %s on %d training images in %.0f s",
        model_path.name,
        len(fit_idx),
        time.perf_counter() - t,
    )
    if n_calib:
        setup.calibrate(x[cal_idx], rate)
    return setup


def artifact_setup(
    path: Path,
    methods: list[str],
    n_calib: int,
    rate: float,
    seed: int,
    ood: CombinedScore | None = None,
) -> Setup:
    from ..artifact import load_artifact

    guard = load_artifact(path)
    setup = Setup(
        guard.require_model(), methods, guard, guard.train_features_, guard.train_labels_, ood
    )
    log.info("  loaded %s: %d training features", path, len(guard.train_features_))
    if n_calib:  # the artifact's held-out split: training images it was not fitted on
        x, _ = evalsets.fmnist_train(None)
        rest = np.setdiff1d(np.arange(len(x)), guard.train_index_)
        pick = np.sort(np.random.default_rng(seed).permutation(rest)[:n_calib])
        setup.calibrate(x[pick], rate)
    return setup


def metric_rows(setup: Setup, s_id: SetScores, s_ood: dict[str, SetScores]) -> dict:
    """Per method: AUROC, FPR@95, AUPR (and detection rate) per OOD set, and the realised
    false-abstain rate on the ID set with its intervals, as a JSON-able dict."""
    res: dict = {}
    for m in setup.methods:
        res[m] = {}
        for name, s in s_ood.items():
            a, b = s_id.scores[m], s.scores[m]
            r = {"auroc": auroc(a, b), "fpr95": fpr_at_95_tpr(a, b), "aupr": aupr(a, b)}
            ab = setup.abstains(m, s)
            if ab is not None:
                r["detected"] = float(ab.mean())
            res[m][name] = r
        ab = setup.abstains(m, s_id)
        if ab is not None:
            res[m]["_false_abstain"] = float(ab.mean())
            res[m]["_false_abstain_ci"] = clopper_pearson(int(ab.sum()), ab.size)
            if m == COMBINED and setup.ood is not None and setup.rate is not None:
                n_p = int(setup.ood.calib_scores_.size)
                res[m]["_false_abstain_range"] = conformal_range(n_p, ab.size, setup.rate)
                res[m]["_n_pvalue"] = n_p
    if "ambiguity" in setup.methods:  # the paper's own threshold: abstain when d_min < d_hull
        res["_paper"] = {
            "false_abstain": realised_rate(s_id.scores["ambiguity"], 0.0),
            **{n: realised_rate(s.scores["ambiguity"], 0.0) for n, s in s_ood.items()},
        }
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


def table(
    res: dict,
    methods: list[str],
    sets: list[str],
    key: str,
    title: str,
    fmt: str = "{:.4f}",
    best=max,
) -> str:
    lines = [
        f"**{title}**",
        "",
        "| method | " + " | ".join(sets) + " | mean |",
        "|---" * (len(sets) + 2) + "|",
    ]
    vals = {m: [res[m][s][key] for s in sets] for m in methods}
    top = [fmt.format(best(vals[m][j] for m in methods)) for j in range(len(sets))]
    for m in methods:  # bold: the best value as printed (ties included)
        cells = [
            (f"**{fmt.format(v)}**" if fmt.format(v) == top[j] else fmt.format(v))
            for j, v in enumerate(vals[m])
        ]
        mean = fmt.format(np.mean(vals[m]))
        lines.append(f"| {LABELS[m]} | " + " | ".join(cells) + f" | {mean} |")
    return "\n".join(lines)


def calib_table(res: dict, methods: list[str], sets: list[str], rate: float, n_id: int) -> str:
    lines = [
        f"**Threshold calibrated for a {100 * rate:g}% false-abstain rate on held-out "
        f"training images: realised false-abstain rate on the {n_id} ID test images, "
        f"detection rate on each OOD set**",
        "",
        "| method | false abstain (ID) | 95% CI | " + " | ".join(sets) + " |",
        "|---" * (len(sets) + 3) + "|",
    ]
    for m in methods:
        if "_false_abstain" not in res[m]:
            continue
        cells = [f"{100 * res[m][s]['detected']:.1f}%" for s in sets]
        lo, hi = res[m]["_false_abstain_ci"]
        lines.append(
            f"| {LABELS[m]} | {100 * res[m]['_false_abstain']:.1f}% | "
            f"[{100 * lo:.1f}, {100 * hi:.1f}]% | " + " | ".join(cells) + " |"
        )
    if "_paper" in res:
        p = res["_paper"]
        lines.append(
            "| raw ambiguity at the paper's threshold 0 | "
            f"{100 * p['false_abstain']:.1f}% | | "
            + " | ".join(f"{100 * p[s]:.1f}%" for s in sets)
            + " |"
        )
    if COMBINED in methods:
        r = res[COMBINED]
        lo, hi = r["_false_abstain_range"]
        inside = lo <= r["_false_abstain"] <= hi
        lines += [
            "",
            f"The combined score abstains where its conformal p-value is below "
            f"{rate:g}; the peers where their score exceeds their split-conformal "
            f"threshold. 95% CI: Clopper-Pearson interval of the realised rate. If test "
            f"and calibration inputs were exchangeable, the combined score's realised "
            f"rate would lie in [{100 * lo:.1f}, {100 * hi:.1f}]% with probability 95% "
            f"(beta-binomial: test sampling and the {r['_n_pvalue']} p-value calibration "
            f"inputs); it is {100 * r['_false_abstain']:.1f}%: "
            f"{'inside' if inside else '**outside**'}.",
        ]
    return "\n".join(lines)


def report(
    res: dict, methods: list[str], sets: list[str], heading: str, rate: float, n_id: int
) -> str:
    parts = [
        heading,
        "",
        table(res, methods, sets, "auroc", "AUROC (higher is better; OOD positive)"),
        "",
        table(
            res,
            methods,
            sets,
            "fpr95",
            "FPR at 95% TPR (fraction of ID flagged when 95% of OOD is; lower is better)",
            best=min,
        ),
        "",
        table(res, methods, sets, "aupr", "AUPR, OOD positive (higher is better)"),
        "",
    ]
    if any("_false_abstain" in res[m] for m in methods):
        parts += [calib_table(res, methods, sets, rate, n_id), ""]
    if COMBINED in methods:
        parts += [versus_table(res, methods, sets), ""]
    return "\n".join(parts)


def versus_table(res: dict, methods: list[str], sets: list[str]) -> str:
    """The combined score against the best peer on every set, per metric (the peers: the
    published detectors, not the guard's own geometric quantities)."""
    peers = [m for m in methods if m in PEERS]
    if not peers:
        return "(no peer among the methods: nothing to compare the combined score with)"
    lines = [
        "**guard (combined) vs the best peer on each set** (AUROC higher, FPR@95 lower is "
        "better; Δ = combined − best peer)",
        "",
        "| set | combined AUROC | best peer AUROC | Δ | combined FPR@95 | best peer FPR@95 "
        "| Δ | at least as good on both (at the printed precision) |",
        "|---" * 8 + "|",
    ]
    for s in sets:
        c = res[COMBINED][s]
        pa = max(peers, key=lambda m: res[m][s]["auroc"])
        pf = min(peers, key=lambda m: res[m][s]["fpr95"])
        ba, bf = res[pa][s]["auroc"], res[pf][s]["fpr95"]
        # compared at the printed precision: differences below it are ties, not losses
        ok = round(c["auroc"], 4) >= round(ba, 4) and round(c["fpr95"], 3) <= round(bf, 3)
        lines.append(
            f"| {s} | {c['auroc']:.4f} | {ba:.4f} ({LABELS[pa]}) | "
            f"{c['auroc'] - ba:+.4f} | {c['fpr95']:.3f} | {bf:.3f} ({LABELS[pf]}) | "
            f"{c['fpr95'] - bf:+.3f} | {'yes' if ok else '**no**'} |"
        )
    return "\n".join(lines)


def shift_sets(n_shift: int, seed: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Fashion-MNIST test images unchanged (``none``) and under each covariate shift."""
    sets = {"none": evalsets.fmnist_test(n_shift, seed=seed + 1)}
    return sets | {
        name: load(n_shift, seed=seed + 1) for name, load in evalsets.COVARIATE_SHIFT.items()
    }


def shift_report(setup: Setup, sets: dict[str, tuple[np.ndarray, np.ndarray]]) -> tuple[str, dict]:
    """Accuracy and abstain rates on covariate-shifted test sets ``name -> (inputs, labels)``."""
    out: dict = {}
    n_shift = len(next(iter(sets.values()))[0])
    lines = [
        "### Covariate shift (reported, not counted as OOD)",
        "",
        f"{n_shift} test images per shift. Abstain rate of each method at its "
        "calibrated threshold, and in brackets the error rate of the abstained / accepted "
        "inputs.",
        "",
    ]
    names = list(sets)
    rows: dict[str, list[str]] = {m: [] for m in setup.methods}
    acc_row = []
    for name, (x, y) in sets.items():
        s = setup.score(x, f"shift {name}")
        wrong = s.pred != y
        acc_row.append(f"{100 * (1 - wrong.mean()):.1f}%")
        out[name] = {"accuracy": float(1 - wrong.mean())}
        for m in setup.methods:
            ab = setup.abstains(m, s)
            if ab is None:
                continue
            ea = wrong[ab].mean() if ab.any() else float("nan")
            ek = wrong[~ab].mean() if (~ab).any() else float("nan")
            out[name][m] = {
                "abstain": float(ab.mean()),
                "err_abstained": float(ea),
                "err_accepted": float(ek),
            }
            pct = lambda v: "–" if np.isnan(v) else f"{100 * v:.0f}%"  # noqa: E731
            rows[m].append(f"{100 * ab.mean():.1f}% ({pct(ea)} / {pct(ek)})")
    lines += [
        "| method | " + " | ".join(names) + " |",
        "|---" * (len(names) + 1) + "|",
        "| model accuracy | " + " | ".join(acc_row) + " |",
    ]
    for m in setup.methods:
        if rows[m]:
            lines.append(f"| {LABELS[m]} | " + " | ".join(rows[m]) + " |")
    return "\n".join(lines) + "\n", out
