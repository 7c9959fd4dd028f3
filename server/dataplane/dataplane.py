"""The data plane: what every transport calls, with no transport types in sight.

Each operation takes the request model of :mod:`.types` and returns its response model; the
transports (``server/grpc``, later HTTP) only convert. One request's path: check the model name
and the requested outputs, decode and validate its tensor to images (:mod:`.decode`), queue them
for the dynamic batcher, which runs merged batches of bounded size through the pipeline (one
model run, one geometry pass) in a worker thread, then name the outputs (:mod:`.outputs`).
Errors are raised as the classes of :mod:`server.errors`, whose table gives each its status
code.

It also holds the health state: ready only after :meth:`start` ran a self-check inference
through the model and the geometry in the batcher's worker, and no longer ready once
:meth:`stop` begins. The self-check is no request: it has metrics of its own, never scraped.

Hot reload (:meth:`load`): the new artifact is loaded and self-checked beside the old one in a
thread of its own (the old one keeps serving), then swapped in between batches
(:meth:`.Batcher.swap`): batches already formed finish on the old model, later ones run on the
new one, no request fails, and every result carries the version that computed it. A refused
artifact leaves the old one serving. :meth:`unload` stops serving the model (NOT_FOUND, not
ready) until the next load.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from guard import Guard, __version__
from guard.errors import InputError

from ..errors import LoadRefused, ModelNotFound, NotReady
from ..metrics import Metrics
from .batcher import Batcher
from .model import ServedModel
from .outputs import SPHERE_OUTPUTS, output_tensors, requested_outputs
from .pipeline import BatchResult, BatchRun, Pipeline
from .types import (
    InferenceRequest,
    InferenceResponse,
    ModelInfo,
    ModelMetadata,
    ModelState,
    RequestTensor,
    ServerMetadata,
)

log = logging.getLogger(__name__)


class PipelineFactory(Protocol):
    """Makes the pipeline that runs a served guard's batches (:class:`Pipeline` or a subclass)."""

    def __call__(
        self, guard: Guard, metrics: Metrics, *, geometry: bool = True, version: int = 1
    ) -> Pipeline: ...


async def _in_thread(fn: Callable[[np.ndarray], BatchRun], x: np.ndarray) -> BatchRun:
    """A pipeline's worker for a reload's self-check: a thread of its own (the batcher's worker
    keeps serving the old model meanwhile)."""
    return await asyncio.to_thread(fn, x)


@dataclass(frozen=True)
class ClassifyResult:
    """guard.v1's answer: the batch result of ``B`` images and the names of the classes."""

    model_name: str
    class_names: tuple[str, ...]
    result: BatchResult


class DataPlane:
    """One served model behind a dynamic batcher. ``await start()`` before use."""

    def __init__(
        self,
        model: ServedModel,
        metrics: Metrics,
        *,
        max_batch_size: int = 64,
        max_delay_s: float = 0.002,
        max_queue: int = 256,
        max_images_per_request: int = 1024,
        pipelines: PipelineFactory = Pipeline,
    ) -> None:
        """``pipelines(guard, metrics, geometry=..., version=...)`` makes the pipeline of a
        served model: :class:`Pipeline` runs the model in-process; upstream mode passes one that
        forwards to the model server (:mod:`server.upstream`)."""
        self.model = model
        self.metrics = metrics
        self.max_images_per_request = max_images_per_request
        self.pipelines = pipelines
        self.pipeline = pipelines(model.guard, metrics, geometry=model.geometry, version=1)
        self.batcher = Batcher(
            self.pipeline,
            max_batch_size=max_batch_size,
            max_delay_s=max_delay_s,
            max_queue=max_queue,
            on_queue_time=metrics.queue_seconds.observe,
        )
        self.ready = False
        #: False after :meth:`unload`, until the next :meth:`load`.
        self.loaded = True
        #: ``loader(artifact)``: the served model of ``artifact`` (None = the configured one),
        #: named like the current one; set by the app (None: reloading is not possible).
        self.loader: Callable[[str | None], ServedModel] | None = None
        self._load_lock = asyncio.Lock()

    # ---------------------------------------------------------------- lifecycle and health
    async def start(self, check: bool = True) -> None:
        """Start the batcher and run the self-check (``check``); ready afterwards. Without
        ``check`` (upstream mode: the upstream may not be up yet) the caller runs
        :meth:`self_check` and sets :attr:`ready`."""
        self.batcher.start()
        if check:
            await self.self_check()
            self.ready = True

    async def self_check(self) -> None:
        """Run the served model's self-check (:meth:`.Pipeline.verify`) in the batcher's
        worker, with metrics of its own (never scraped); raises when it fails."""
        check = self.pipelines(self.model.guard, Metrics(), geometry=self.model.geometry)
        self.model.check_result(await check.verify(self.batcher.run_in_worker))
        log.info("model %r passed its self-check", self.model.name)

    async def stop(self) -> None:
        """Stop the batcher (after the transports let in-flight requests finish)."""
        self.ready = False
        await self.batcher.close()

    def live(self) -> bool:
        return True

    def model_ready(self, name: str, version: str = "") -> bool:
        return self.ready and self.loaded and self.model.serves(name, version)

    def _check(self, name: str, version: str = "", allow_empty: bool = False) -> ServedModel:
        """The served model, if ``name`` / ``version`` name it and it is loaded."""
        m = self.model
        m.check_name(name, allow_empty=allow_empty, version=version)
        if not self.loaded:
            raise ModelNotFound(
                f"model {m.name!r} is unloaded; load it again (RepositoryModelLoad, "
                f"POST /v2/repository/models/{m.name}/load) to serve it"
            )
        return m

    # ---------------------------------------------------------------- model repository
    def repository_index(self, ready_only: bool = False) -> tuple[ModelState, ...]:
        """The one model and its state (READY, or UNAVAILABLE when unloaded)."""
        m = self.model
        if self.loaded and self.ready:
            state = ModelState(m.name, str(m.version), "READY", "")
        else:
            state = ModelState(m.name, str(m.version), "UNAVAILABLE", "unloaded")
        return (state,) if state.state == "READY" or not ready_only else ()

    async def load(self, name: str, artifact: str | None = None) -> int:
        """Load ``artifact`` (None: the configured one) as model ``name`` and swap it in;
        returns the new version. Refused (:class:`LoadRefused`, the old model keeps serving)
        when it fails to load or its self-check fails."""
        self.model.check_name(name)
        loader = self.loader
        if loader is None:
            raise LoadRefused("this server serves an in-memory guard: there is no artifact to load")
        async with self._load_lock:
            old = self.model
            try:
                # beside the old model, off the event loop and off the batcher's worker
                new = await asyncio.to_thread(loader, artifact)
                check = self.pipelines(new.guard, Metrics(), geometry=new.geometry)
                new.check_result(await check.verify(_in_thread))
            except Exception as exc:  # noqa: BLE001 - any failure refuses the artifact
                self.metrics.reloads.labels(outcome="refused").inc()
                log.error(
                    "reload of %s refused (%s: %s); still serving version %d",
                    artifact or (old.artifact or "the configured artifact"),
                    type(exc).__name__,
                    exc,
                    old.version,
                )
                raise LoadRefused(
                    f"artifact refused ({type(exc).__name__}: {exc}); still serving version "
                    f"{old.version}"
                ) from exc
            new.version = old.version + 1
            pipeline = self.pipelines(
                new.guard, self.metrics, geometry=new.geometry, version=new.version
            )
            await self.batcher.swap(pipeline)
            self.pipeline = pipeline
            self.model = new
            self.loaded = True
        self.metrics.reloads.labels(outcome="ok").inc()
        log.info("model %r version %d loaded from %s", new.name, new.version, new.artifact)
        return new.version

    def unload(self, name: str) -> None:
        """Stop serving model ``name`` (NOT_FOUND, not ready) until the next :meth:`load`;
        requests already accepted are answered."""
        self.model.check_name(name)
        self.loaded = False
        log.info("model %r unloaded", name)

    async def submit(self, x: np.ndarray, *, sphere: bool = True) -> BatchResult:
        """Queue validated images ``x`` (B, ...) for the next batches; their results.

        Cancelling the caller (a gRPC cancel or deadline) stops the images not yet run.
        Counted in ``guard_in_flight_requests`` until it returns.
        """
        with self.metrics.in_flight.track_inprogress():
            return await self.batcher.submit(x, sphere=sphere)

    # ---------------------------------------------------------------- Open Inference Protocol
    def server_metadata(self) -> ServerMetadata:
        return ServerMetadata(name="guard", version=__version__)

    def model_metadata(self, name: str, version: str = "") -> ModelMetadata:
        return self._check(name, version).metadata()

    async def infer(self, req: InferenceRequest) -> InferenceResponse:
        m = self._check(req.model_name, req.model_version)
        names = requested_outputs(req.outputs, m.geometry)
        # the spherical hull's distance (one hull query of about four) only when asked for
        sphere = not SPHERE_OUTPUTS.isdisjoint(names)
        result = await self.submit(self._images(m, req), sphere=sphere)
        return InferenceResponse(m.name, str(result.version), req.id, output_tensors(names, result))

    def _images(self, m: ServedModel, req: InferenceRequest) -> np.ndarray:
        name = m.input_name
        if len(req.inputs) != 1:
            raise InputError(
                f"expected exactly one input tensor named {name!r}, got "
                f"{[t.name for t in req.inputs]}"
            )
        t = req.inputs[0]
        if t.name != name:
            raise InputError(f"unknown input {t.name!r}; this model's input is {name!r}")
        return m.images(t, f"input {t.name!r}", self.max_images_per_request)

    # ---------------------------------------------------------------- guard.v1
    async def classify(self, model_name: str, images: RequestTensor) -> ClassifyResult:
        """Every score and the decision for each image; ``model_name`` may be empty."""
        m = self._check(model_name, allow_empty=True)
        if not m.geometry:
            raise NotReady("Classify needs the geometry, which this server has disabled")
        result = await self.submit(m.images(images, "images", self.max_images_per_request))
        return ClassifyResult(m.name, tuple(m.guard.class_names_), result)

    def info(self, model_name: str) -> ModelInfo:
        return self._check(model_name, allow_empty=True).info()
