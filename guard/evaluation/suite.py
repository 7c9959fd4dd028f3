"""The multi-model OOD suite: every method on every (model, OOD set) pair, and the guard's
default abstention score judged by its worst case against the best peer.

For each model of :mod:`.suite_data`, exactly as ``guard fit`` does it: the guard is fitted on
the model's training features with 10% of them held out (seeded) to calibrate, or, for models
with held-out calibration images (``guard fit --calib``), on all of them; the peers are
fitted on the same features with their published defaults (:data:`guard.detectors.REGISTRY`)
and their 5% thresholds come from the same calibration inputs (split conformal); the guard's
candidate scores (:class:`~guard.detectors.CombinedScore`) are fitted on the same data the
guard's ``fit`` would give them. Nothing is ever fitted on test or OOD inputs. The geometry of every
input is computed once (:class:`ModelEval`); every score is then a cheap function of it.

Per method and pair: AUROC and FPR@95%TPR (OOD positive); per method and model: the realised
false-abstain rate on the ID test inputs at the calibrated 5% (the guard's candidates abstain
at ``p_value < 0.05``), with the beta-binomial 95% range it would have under exchangeability.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..detectors import DEFAULT_COMPONENTS, REGISTRY, CombinedScore, Evidence, upper_threshold
from ..detectors.combined import DEFAULT_COMBINE
from ..estimator import Guard
from ..model import OnnxClassifier
from .metrics import auroc, fpr_at_95_tpr
from .ood import conformal_range
from .suite_data import Sizes, SuiteModel

__all__ = [
    "CANDIDATES",
    "DEFAULT",
    "PEERS",
    "Candidate",
    "ModelEval",
    "PairResult",
    "evaluate",
    "model_entry",
    "prepare",
]

log = logging.getLogger(__name__)

#: The guard's peers (published defaults).
PEERS = ("msp", "energy", "mahalanobis", "knn", "vim", "fdbd")
#: The guard's raw geometric quantities, reported beside the peers (not peers, not candidates).
GEOMETRY = ("hull", "sphere_hull", "ambiguity")


@dataclass(frozen=True)
class Candidate:
    """An abstention score the guard could default to: ``components`` combined by ``combine``."""

    name: str
    components: tuple[str, ...]
    combine: str

    def make(self, seed: int) -> CombinedScore:
        return CombinedScore(self.components, self.combine, seed)


#: The guard's default abstention score (what ``Guard.fit`` fits).
DEFAULT = Candidate("guard default", tuple(DEFAULT_COMPONENTS), DEFAULT_COMBINE)
#: Candidates compared on the suite (the default among them, the previous default and the original
#: one, before the suite existed).
CANDIDATES: tuple[Candidate, ...] = (
    DEFAULT,
    Candidate("previous default", ("sphere_hull", "vim", "mahalanobis", "fdbd"), "stouffer_or"),
    Candidate("earlier default", ("sphere_hull", "hull", "fdbd", "vim"), "stouffer"),
    Candidate("original default", ("hull", "fdbd", "mahalanobis"), "min_variance"),
    Candidate(
        "half-whitened sphere hulls", ("hw_sphere_hull", "hw_metric_sphere_hull"), "stouffer"
    ),
    Candidate("half-whitened sphere hull", ("hw_sphere_hull",), "stouffer"),
    Candidate(
        "half-whitened sphere hulls (Stouffer) or fDBD",
        ("hw_sphere_hull", "hw_metric_sphere_hull", "fdbd"),
        "stouffer_max",
    ),
    Candidate(
        "sphere, raw hull, ViM (Stouffer) or fDBD",
        ("sphere_hull", "hull", "vim", "fdbd"),
        "stouffer_or",
    ),
    Candidate(
        "sphere, ViM, Mahalanobis (Stouffer)", ("sphere_hull", "vim", "mahalanobis"), "stouffer"
    ),
    Candidate(
        "sphere, ViM, Mahalanobis, fDBD (Stouffer)",
        ("sphere_hull", "vim", "mahalanobis", "fdbd"),
        "stouffer",
    ),
    Candidate("sphere hull", ("sphere_hull",), "stouffer"),
    Candidate("sphere + raw hull", ("sphere_hull", "hull"), "stouffer"),
    Candidate("sphere + kNN", ("sphere_hull", "knn"), "stouffer"),
    Candidate("sphere + fDBD (max)", ("sphere_hull", "fdbd"), "max"),
    Candidate("sphere, raw hull, fDBD (Stouffer)", ("sphere_hull", "hull", "fdbd"), "stouffer"),
    Candidate("sphere, raw hull, fDBD (Fisher)", ("sphere_hull", "hull", "fdbd"), "fisher"),
    Candidate(
        "sphere, raw hull, fDBD, ViM (Fisher)", ("sphere_hull", "hull", "fdbd", "vim"), "fisher"
    ),
    Candidate(
        "sphere, fDBD, Mahalanobis, ViM (Fisher)",
        ("sphere_hull", "fdbd", "mahalanobis", "vim"),
        "fisher",
    ),
    Candidate(
        "sphere, raw hull, fDBD, Mahalanobis (min-variance)",
        ("sphere_hull", "hull", "fdbd", "mahalanobis"),
        "min_variance",
    ),
)


@dataclass
class ModelEval:
    """One model's geometry, computed once.

    Attributes:
        model: the suite entry.
        train_features: (N, f) the features spanning the guard's hulls (the 90% training part);
            train_labels: (N,) their labels; W (n, f), b (n,): the model's final layer.
        calib, id, ood: :class:`~guard.detectors.Evidence` of the held-out calibration inputs,
            the ID test inputs and every OOD set (name -> Evidence), with the guard's geometry.
        seed: the guard's seed (of the calibration split and of the candidates' fits).
        seconds: time spent.
    """

    model: SuiteModel
    train_features: np.ndarray
    train_labels: np.ndarray
    W: np.ndarray
    b: np.ndarray
    calib: Evidence
    id: Evidence
    ood: dict[str, Evidence]
    seed: int
    seconds: float


def _evidence(guard: Guard, clf: OnnxClassifier, x: np.ndarray) -> Evidence:
    logits, feats = clf.run(x)
    return Evidence.from_scores(guard.score_features(feats, logits), feats)


def prepare(model: SuiteModel, sizes: Sizes, *, progress: bool = False) -> ModelEval:
    """Run ``model`` on its sets and compute the guard's geometry of every input once."""
    t0 = time.perf_counter()
    data = model.load(sizes)
    clf = OnnxClassifier(model.path)
    _, feats = clf.run(data.train_x, progress=progress)
    if data.calib_x is None:
        # the split guard fit makes: 10% held out (seeded), the rest spans the hull
        guard = Guard(ood=False, progress=progress, seed=sizes.seed).fit_features(
            feats, clf.W, clf.b, data.train_y
        )
        cal = np.setdiff1d(np.arange(len(feats)), guard.train_index_)
        calib = Evidence.from_scores(guard.score_features(feats[cal]), feats[cal])
    else:  # guard fit --calib: every training input spans the hull
        guard = Guard(ood=False, progress=progress, seed=sizes.seed, calib_fraction=0)
        guard.fit_features(feats, clf.W, clf.b, data.train_y)
        calib = _evidence(guard, clf, data.calib_x)
    ev_id = _evidence(guard, clf, data.id_x)
    ood = {name: _evidence(guard, clf, x) for name, x in data.ood.items()}
    labels = data.train_y[guard.train_index_].astype(np.int64)
    dt = time.perf_counter() - t0
    log.info(
        "  %s: %d train, %d calib, %d ID in %.0f s",
        model.name,
        len(labels),
        len(calib),
        len(ev_id),
        dt,
    )
    F = np.array(guard.train_features_)
    return ModelEval(model, F, labels, guard.W_, guard.b_, calib, ev_id, ood, sizes.seed, dt)


@dataclass(frozen=True)
class PairResult:
    """One method on one model: ``auroc`` / ``fpr95`` per OOD set, the realised false-abstain
    rate on the ID test inputs (``false_abstain``) and, for the guard's candidates, its
    exchangeability range ``abstain_range`` (else ``None``) and ``weights``."""

    auroc: dict[str, float]
    fpr95: dict[str, float]
    false_abstain: float
    abstain_range: tuple[float, float] | None = None
    weights: tuple[float, ...] | None = None


def _pairs(s_id: np.ndarray, s_ood: dict[str, np.ndarray]) -> tuple[dict, dict]:
    a = {k: auroc(s_id, v) for k, v in s_ood.items()}
    f = {k: fpr_at_95_tpr(s_id, v) for k, v in s_ood.items()}
    return a, f


def evaluate(
    ev: ModelEval,
    *,
    rate: float = 0.05,
    methods: Sequence[str] = PEERS + GEOMETRY,
    candidates: Sequence[Candidate] = CANDIDATES,
) -> dict[str, PairResult]:
    """Every method's and candidate's :class:`PairResult` on one model (by name)."""
    F, W, b = ev.train_features, ev.W, ev.b
    out: dict[str, PairResult] = {}
    for m in methods:
        det = REGISTRY[m]().fit(F, ev.train_labels, W, b)
        t = upper_threshold(det.score(ev.calib), rate)
        s_id = det.score(ev.id)
        a, f = _pairs(s_id, {k: det.score(v) for k, v in ev.ood.items()})
        out[m] = PairResult(a, f, float(np.mean(s_id > t)))
    for c in candidates:
        score = c.make(ev.seed).fit(F, ev.train_labels, W, b, ev.calib)
        s_id, p_id = score.score(ev.id)
        a, f = _pairs(s_id, {k: score.score(v)[0] for k, v in ev.ood.items()})
        rng = conformal_range(int(score.calib_scores_.size), len(s_id), rate)
        w = tuple(float(x) for x in score.weights_)
        out[c.name] = PairResult(a, f, float(np.mean(p_id < rate)), rng, w)
    return out


def model_entry(ev: ModelEval, results: dict[str, PairResult]) -> dict[str, Any]:
    """One model's JSON entry of the suite's results (:mod:`.suite_report`)."""
    return {
        "description": ev.model.description,
        "onnx": ev.model.onnx,
        "n_train": len(ev.train_features),
        "n_calib": len(ev.calib),
        "n_id": len(ev.id),
        "ood_sizes": {k: len(v) for k, v in ev.ood.items()},
        "seconds": round(ev.seconds, 1),
        "methods": {
            m: {
                "auroc": r.auroc,
                "fpr95": r.fpr95,
                "false_abstain": r.false_abstain,
                "abstain_range": None if r.abstain_range is None else list(r.abstain_range),
                "weights": None if r.weights is None else list(r.weights),
            }
            for m, r in results.items()
        },
    }
