"""Upstream mode's pipeline: a merged batch goes to the model server for its logits and
features (awaited on the event loop), is checked to come from the artifact's model, and its
geometry and decisions are computed in the batcher's worker as in-process
(:meth:`~server.dataplane.pipeline.Pipeline.score`).

``guard_model_seconds`` times the forwarded call here (the model's run, as seen from Guard);
``guard_upstream_seconds`` and ``guard_upstream_errors_total`` come from the client. A batch
whose logits are not ``W·features + b`` fails as a whole with ``FAILED_PRECONDITION``, is counted
as ``guard_upstream_errors_total{code="FAILED_PRECONDITION"}`` and turns health NOT_SERVING
(:mod:`.monitor`). A batch refused without being forwarded (the upstream is down or the wrong
model) is counted there too, with the status it gets (``UNAVAILABLE``,
``FAILED_PRECONDITION``), so that the error rate does not fall silent while the upstream is
down.
"""

from __future__ import annotations

import time

import numpy as np

from guard import Guard
from guard.model.triton import served_outputs

from ..dataplane.pipeline import BatchRun, InWorker, Pipeline
from ..errors import UpstreamError, UpstreamMismatch, code_of
from ..metrics import Metrics
from .check import check_affine, check_reference
from .client import UpstreamClient
from .monitor import UpstreamMonitor


class UpstreamPipeline(Pipeline):
    """A :class:`Pipeline` whose model runs on the upstream model server."""

    def __init__(
        self,
        guard: Guard,
        metrics: Metrics,
        *,
        geometry: bool = True,
        version: int = 1,
        client: UpstreamClient,
        monitor: UpstreamMonitor,
        rtol: float = 1e-3,
    ) -> None:
        super().__init__(guard, metrics, geometry=geometry, version=version)
        model = guard.require_model()
        self.client = client
        self.monitor = monitor
        self.rtol = rtol
        self.input_name = model.input_name
        self.outputs = served_outputs(model)  # (logits, features) as `guard export` names them

    def __call__(self, x: np.ndarray, *, sphere: bool = True) -> BatchRun:
        raise RuntimeError("upstream mode: batches run with `await pipeline.arun(x, in_worker)`")

    async def fetch(self, x: np.ndarray, metrics: Metrics | None) -> tuple[np.ndarray, np.ndarray]:
        """The upstream's logits (B, n) and features (B, f) on ``x``."""
        out = await self.client.infer(x, self.input_name, self.outputs, metrics)
        logits, feats = (out[name] for name in self.outputs)
        return logits.reshape(len(x), -1), feats.reshape(len(x), -1)

    async def arun(self, x: np.ndarray, in_worker: InWorker, *, sphere: bool = True) -> BatchRun:
        try:
            self.monitor.gate()
        except UpstreamError as exc:  # refused without forwarding: down, or the wrong model
            self.metrics.upstream_errors.labels(code=code_of(exc).grpc_name).inc()
            raise
        t0 = time.perf_counter()
        try:
            logits, feats = await self.fetch(x, self.metrics)
            self.metrics.model_seconds.observe(time.perf_counter() - t0)
            try:
                check_affine(self.guard, logits, feats, self.rtol)
            except UpstreamMismatch:
                self.metrics.upstream_errors.labels(code="FAILED_PRECONDITION").inc()
                raise
        except UpstreamError as exc:
            await self.monitor.report(exc)
            raise
        if not self.geometry:  # logits and argmax only: no hop to the worker thread
            return self.score(x, logits, feats)
        return await in_worker(lambda images: self.score(images, logits, feats, sphere=sphere), x)

    async def check_reference(self) -> tuple[np.ndarray, np.ndarray]:
        """The upstream's logits and features on the reference inputs, once checked to be the
        artifact's (else :class:`UpstreamMismatch`); other upstream failures raise their own
        error. Not timed or counted in the metrics."""
        x = self.guard.reference_inputs_
        if x is None:
            raise UpstreamMismatch(
                "the artifact has no reference inputs (fitted from features): refit it with "
                "`guard fit --model ...` to use it in upstream mode"
            )
        logits, feats = await self.fetch(x, None)
        check_reference(self.guard, logits, feats, self.rtol)
        check_affine(self.guard, logits, feats, self.rtol)
        return logits, feats

    async def verify(self, in_worker: InWorker) -> BatchRun:
        """The self-check before it serves (start, reload): the reference check, then the
        geometry on the upstream's answers to the reference inputs."""
        logits, feats = await self.check_reference()
        x = self.guard.reference_inputs_
        if x is None:  # check_reference refused it already
            raise UpstreamMismatch("the artifact has no reference inputs")
        return await in_worker(lambda images: self.score(images, logits, feats), x)
