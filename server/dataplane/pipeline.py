"""What one merged batch goes through: one model run, one geometry pass, the decisions.

The numbers all come from ``guard``; this module only times the two stages and records the
per-image distributions for monitoring.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from guard import Guard
from guard.types import FLAG_AMBIGUOUS, FLAG_NAMES, FLAG_OOD, Decisions, Scores

from ..metrics import Metrics

_T = TypeVar("_T", Scores, Decisions)


def _slice(obj: _T, sl: slice) -> _T:
    """The images ``sl`` of a Scores or Decisions (every field is an array over images)."""
    return dataclasses.replace(
        obj, **{f.name: getattr(obj, f.name)[sl] for f in dataclasses.fields(obj)}
    )


@dataclass(frozen=True)
class BatchResult:
    """Results of ``B`` images; ``scores``/``decisions`` are None with the geometry off."""

    logits: np.ndarray
    pred: np.ndarray
    scores: Scores | None
    decisions: Decisions | None

    def __getitem__(self, sl: slice) -> BatchResult:
        return BatchResult(
            self.logits[sl],
            self.pred[sl],
            None if self.scores is None else _slice(self.scores, sl),
            None if self.decisions is None else _slice(self.decisions, sl),
        )

    def __len__(self) -> int:
        return int(self.pred.shape[0])


class Pipeline:
    """Callable run in a worker thread on a merged batch ``x`` (float32, the model's shape).

    ``geometry=False`` runs the bare model (logits and prediction only).
    """

    def __init__(self, guard: Guard, metrics: Metrics, *, geometry: bool = True) -> None:
        self.guard = guard
        self.metrics = metrics
        self.geometry = geometry

    def __call__(self, x: np.ndarray) -> BatchResult:
        m = self.metrics
        t0 = time.perf_counter()
        logits, feats = self.guard.require_model().run(x, batch_size=max(len(x), 1))
        t1 = time.perf_counter()
        m.model_seconds.observe(t1 - t0)
        m.batch_size.observe(len(x))
        m.images.inc(len(x))
        if not self.geometry:
            return BatchResult(logits, np.argmax(logits, axis=1), None, None)
        scores = self.guard.score_features(feats, logits)
        decisions = self.guard.decide(scores)
        m.geometry_seconds.observe(time.perf_counter() - t1)
        self._observe(scores, decisions)
        return BatchResult(logits, scores.pred, scores, decisions)

    def _observe(self, s: Scores, d: Decisions) -> None:
        m = self.metrics
        for i in range(len(s)):
            m.ambiguity.observe(float(s.ambiguity[i]))
            if np.isfinite(s.d_min[i]):
                m.d_min.observe(float(s.d_min[i]))
            m.hull.observe(float(s.hull_upper[i]))
        for bit, name in FLAG_NAMES.items():
            raised = int(np.count_nonzero(d.flags & bit))
            if raised:
                m.flags.labels(flag=name).inc(raised)
        # abstentions by the reason that caused them (out of distribution first), so that the
        # reasons add up to the number of abstentions
        ood = d.abstain & (d.flags & FLAG_OOD != 0)
        ambiguous_only = d.abstain & ~ood & (d.flags & FLAG_AMBIGUOUS != 0)
        for reason, mask in (("ood", ood), ("ambiguous", ambiguous_only)):
            if mask.any():
                m.abstentions.labels(reason=reason).inc(int(np.count_nonzero(mask)))
