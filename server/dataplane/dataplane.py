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
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from guard import __version__
from guard.errors import InputError

from ..errors import NotReady
from ..metrics import Metrics
from .batcher import Batcher
from .model import VERSION, ServedModel
from .outputs import output_tensors, requested_outputs
from .pipeline import BatchResult, Pipeline
from .types import (
    InferenceRequest,
    InferenceResponse,
    ModelInfo,
    ModelMetadata,
    RequestTensor,
    ServerMetadata,
)

log = logging.getLogger(__name__)


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
    ) -> None:
        self.model = model
        self.metrics = metrics
        self.max_images_per_request = max_images_per_request
        self.pipeline = Pipeline(model.guard, metrics, geometry=model.geometry)
        self.batcher = Batcher(
            self.pipeline,
            max_batch_size=max_batch_size,
            max_delay_s=max_delay_s,
            max_queue=max_queue,
            on_queue_time=metrics.queue_seconds.observe,
        )
        self.ready = False

    # ---------------------------------------------------------------- lifecycle and health
    async def start(self) -> None:
        """Start the batcher and run the self-check; ready afterwards."""
        self.batcher.start()
        check = Pipeline(self.model.guard, Metrics(), geometry=self.model.geometry)
        self.model.check_result(await self.batcher.run_in_worker(check, self.model.blank_images()))
        self.ready = True
        log.info("model %r passed its self-check", self.model.name)

    async def stop(self) -> None:
        """Stop the batcher (after the transports let in-flight requests finish)."""
        self.ready = False
        await self.batcher.close()

    def live(self) -> bool:
        return True

    def model_ready(self, name: str, version: str = "") -> bool:
        return self.ready and self.model.serves(name, version)

    async def submit(self, x: np.ndarray) -> BatchResult:
        """Queue validated images ``x`` (B, ...) for the next batches; their results.

        Cancelling the caller (a gRPC cancel or deadline) stops the images not yet run.
        """
        return await self.batcher.submit(x)

    # ---------------------------------------------------------------- Open Inference Protocol
    def server_metadata(self) -> ServerMetadata:
        return ServerMetadata(name="guard", version=__version__)

    def model_metadata(self, name: str, version: str = "") -> ModelMetadata:
        self.model.check_name(name, version=version)
        return self.model.metadata()

    async def infer(self, req: InferenceRequest) -> InferenceResponse:
        m = self.model
        m.check_name(req.model_name, version=req.model_version)
        names = requested_outputs(req.outputs, m.geometry)
        result = await self.submit(self._images(req))
        return InferenceResponse(m.name, VERSION, req.id, output_tensors(names, result))

    def _images(self, req: InferenceRequest) -> np.ndarray:
        name = self.model.input_name
        if len(req.inputs) != 1:
            raise InputError(
                f"expected exactly one input tensor named {name!r}, got "
                f"{[t.name for t in req.inputs]}"
            )
        t = req.inputs[0]
        if t.name != name:
            raise InputError(f"unknown input {t.name!r}; this model's input is {name!r}")
        return self.model.images(t, f"input {t.name!r}", self.max_images_per_request)

    # ---------------------------------------------------------------- guard.v1
    async def classify(self, model_name: str, images: RequestTensor) -> ClassifyResult:
        """Every score and the decision for each image; ``model_name`` may be empty."""
        m = self.model
        m.check_name(model_name, allow_empty=True)
        if not m.geometry:
            raise NotReady("Classify needs the geometry, which this server has disabled")
        result = await self.submit(m.images(images, "images", self.max_images_per_request))
        return ClassifyResult(m.name, tuple(m.guard.class_names_), result)

    def info(self, model_name: str) -> ModelInfo:
        self.model.check_name(model_name, allow_empty=True)
        return self.model.info()
