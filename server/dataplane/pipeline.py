"""What one merged batch goes through: one model run, one geometry pass, the decisions.

The numbers all come from ``guard``; this module times the two stages, records the per-image
distributions for monitoring, and keeps each image's failure to itself: an image whose logits or
features are not finite (a finite input that overflows inside the model) gets its own error in
:class:`BatchRun`, and the rest of the batch is scored as usual.

The batcher runs a batch with :meth:`Pipeline.arun`: in-process, the model run and the geometry
both run in the batcher's worker thread; a subclass may get the logits and features elsewhere
(upstream mode, :mod:`server.upstream.pipeline`: a model server, awaited on the event loop) and
hand them to :meth:`Pipeline.score` in the worker. :meth:`Pipeline.verify` is the self-check
before a model serves.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from guard import Guard
from guard.errors import InputError
from guard.types import FLAG_AMBIGUOUS, FLAG_NAMES, FLAG_OOD, Decisions, Scores

from ..metrics import Metrics

_T = TypeVar("_T", Scores, Decisions)
#: How a pipeline reaches the batcher's worker thread: ``await in_worker(fn, x)`` = ``fn(x)`` there.
InWorker = Callable[[Callable[[np.ndarray], "BatchRun"], np.ndarray], Awaitable["BatchRun"]]


def _slice(obj: _T, sl: slice) -> _T:
    """The images ``sl`` of a Scores or Decisions (every field is an array over images)."""
    return dataclasses.replace(
        obj, **{f.name: getattr(obj, f.name)[sl] for f in dataclasses.fields(obj)}
    )


def _concat(objs: Sequence[_T]) -> _T:
    """Scores or Decisions of consecutive images, joined (arrays concatenated, lists chained)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(objs[0]):
        parts = [getattr(o, f.name) for o in objs]
        if isinstance(parts[0], np.ndarray):
            out[f.name] = np.concatenate(parts)
        else:
            out[f.name] = [v for p in parts for v in p]
    return dataclasses.replace(objs[0], **out)


@dataclass(frozen=True)
class BatchResult:
    """Results of ``B`` images; ``scores``/``decisions`` are None with the geometry off;
    ``version``: the served model's version that computed them."""

    logits: np.ndarray
    pred: np.ndarray
    scores: Scores | None
    decisions: Decisions | None
    version: int = 1

    def __getitem__(self, sl: slice) -> BatchResult:
        return BatchResult(
            self.logits[sl],
            self.pred[sl],
            None if self.scores is None else _slice(self.scores, sl),
            None if self.decisions is None else _slice(self.decisions, sl),
            self.version,
        )

    def __len__(self) -> int:
        return int(self.pred.shape[0])

    @staticmethod
    def concat(parts: Sequence[BatchResult]) -> BatchResult:
        """The results of consecutive chunks of images as one (one version: the batcher swaps
        models only between requests' chunks)."""
        if len(parts) == 1:
            return parts[0]
        scores = [p.scores for p in parts if p.scores is not None]
        decisions = [p.decisions for p in parts if p.decisions is not None]
        return BatchResult(
            np.concatenate([p.logits for p in parts]),
            np.concatenate([p.pred for p in parts]),
            _concat(scores) if scores else None,
            _concat(decisions) if decisions else None,
            parts[0].version,
        )


@dataclass(frozen=True)
class BatchRun:
    """What running one merged batch of ``B`` images gave.

    ``result`` holds the images that could be scored, in batch order (None when none could);
    ``failed`` (sorted batch rows) are those that could not, with the reason for each in
    ``errors``.
    """

    result: BatchResult | None
    failed: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    errors: tuple[str, ...] = ()

    def part(self, lo: int, hi: int, first: int = 0) -> BatchResult:
        """The results of batch rows ``lo:hi``, which are images ``first, first+1, ...`` of one
        request; an :class:`InputError` naming the first of them that failed, if any did."""
        i, j = np.searchsorted(self.failed, [lo, hi])
        if i < j:
            row = int(self.failed[i])
            raise InputError(f"image {first + row - lo} of this request: {self.errors[i]}")
        if self.result is None:  # no failure in lo:hi, so the range is empty
            raise ValueError(f"batch rows {lo}:{hi} have no results")
        return self.result[lo - int(i) : hi - int(i)]  # rows before lo that failed are absent


def _overflow(x: np.ndarray, logits: np.ndarray, feats: np.ndarray) -> str:
    """Why one image's model outputs are not finite although its input is."""
    what = "features" if not np.isfinite(feats).all() else "logits"
    top = float(np.abs(x).max())
    return (
        f"the model's {what} overflow (values up to {top:.3g} in the input); send inputs "
        f"in the range the model was trained on"
    )


class Pipeline:
    """Callable run in a worker thread on a merged batch ``x`` (float32, the model's shape).

    ``geometry=False`` runs the bare model (logits and prediction only); ``version`` is stamped
    on every result.
    """

    def __init__(
        self, guard: Guard, metrics: Metrics, *, geometry: bool = True, version: int = 1
    ) -> None:
        self.guard = guard
        self.metrics = metrics
        self.geometry = geometry
        self.version = version

    def __call__(self, x: np.ndarray, *, sphere: bool = True) -> BatchRun:
        """The whole batch in this thread: the in-process model run, then :meth:`score`."""
        t0 = time.perf_counter()
        logits, feats = self.guard.require_model().run(x, batch_size=max(len(x), 1))
        self.metrics.model_seconds.observe(time.perf_counter() - t0)
        return self.score(x, logits, feats, sphere=sphere)

    async def arun(self, x: np.ndarray, in_worker: InWorker, *, sphere: bool = True) -> BatchRun:
        """Run one merged batch (what the batcher awaits); in-process: all in the worker.
        ``sphere``: whether a request of the batch wants the spherical hull's distance."""
        return await in_worker(lambda images: self(images, sphere=sphere), x)

    def check_inputs(self) -> np.ndarray:
        """The self-check's inputs: one all-zero image of the model's input shape."""
        return blank_images(self.guard, 1)

    async def verify(self, in_worker: InWorker) -> BatchRun:
        """The self-check run (on :meth:`check_inputs`) before this pipeline serves; raises when
        the model is unusable (e.g. upstream mode: not the artifact's model)."""
        return await self.arun(self.check_inputs(), in_worker)

    def score(
        self, x: np.ndarray, logits: np.ndarray, feats: np.ndarray, *, sphere: bool = True
    ) -> BatchRun:
        """The geometry and the decisions of images ``x`` (B, ...) from the model's ``logits``
        (B, n) and ``feats`` (B, f); images whose outputs are not finite fail alone. The
        spherical hull's distance only with ``sphere`` (:meth:`Guard.score_features`)."""
        m = self.metrics
        t1 = time.perf_counter()
        m.batch_size.observe(len(x))
        # checked per image: a finite input may still overflow inside the model, and that is
        # the error of its own request only
        ok = np.isfinite(logits).all(axis=1) & np.isfinite(feats).all(axis=1)
        failed = np.flatnonzero(~ok)
        errors = tuple(_overflow(x[i], logits[i], feats[i]) for i in failed)
        if len(failed):
            logits, feats = logits[ok], feats[ok]
        if not len(logits):
            return BatchRun(None, failed, errors)
        if not self.geometry:
            m.images.inc(len(logits))
            return BatchRun(
                BatchResult(logits, np.argmax(logits, axis=1), None, None, self.version),
                failed,
                errors,
            )
        scores = self.guard.score_features(feats, logits, sphere=sphere)
        decisions = self.guard.decide(scores)
        m.geometry_seconds.observe(time.perf_counter() - t1)
        m.images.inc(len(logits))  # once scored: a batch that fails is rerun, not counted twice
        self._observe(scores, decisions)
        return BatchRun(
            BatchResult(logits, scores.pred, scores, decisions, self.version), failed, errors
        )

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


def blank_images(guard: Guard, n: int = 1) -> np.ndarray:
    """``n`` all-zero images of ``guard``'s model input shape (a dynamic dimension: 1)."""
    shape = [n] + [d or 1 for d in guard.require_model().input_shape[1:]]
    return np.zeros(shape, dtype=np.float32)
