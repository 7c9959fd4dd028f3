"""The served model: a fitted guard under the name clients use, what it accepts and what it
reports (metadata, info). Loading and the self-check live here; batching and the request flow
live in :mod:`server.dataplane.dataplane`."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from guard import Guard, __version__, load_artifact
from guard.errors import InputError
from guard.model import OnnxClassifier

from ..errors import ModelNotFound, echo
from .decode import expected_shape, to_images
from .outputs import OUTPUTS, available
from .pipeline import BatchRun, blank_images
from .types import ModelInfo, ModelMetadata, RequestTensor, TensorMetadata

log = logging.getLogger(__name__)

#: Where the built-in Fashion-MNIST guard is fitted (on first use) when no artifact is given.
DEFAULT_ARTIFACT = Path("artifacts/fmnist_resnet")
#: The version of the model loaded at start; each successful reload adds one.
VERSION = "1"
PLATFORM = "guard_onnxruntime"


class ServedModel:
    """One fitted guard served as ``name``; ``geometry=False`` serves the bare model.

    ``version`` counts the loads (1 at start, +1 per reload); ``artifact`` is the directory it
    came from (None: an in-memory guard)."""

    def __init__(
        self,
        guard: Guard,
        name: str,
        *,
        geometry: bool = True,
        version: int = 1,
        artifact: Path | None = None,
        threads: int = 1,
    ) -> None:
        if guard.model_ is None:
            raise InputError(
                "the guard has no model (fitted from features); refit it with "
                "`guard fit --model ...` to serve it"
            )
        guard.n_jobs = threads  # a run-time choice: the threads of each batch's geometry
        self.guard = guard
        self.name = name
        self.geometry = geometry
        self.version = version
        self.artifact = artifact

    @classmethod
    def load(
        cls,
        artifact: str | Path | None,
        *,
        name: str | None = None,
        device: str = "auto",
        geometry: bool = True,
        threads: int = 1,
    ) -> ServedModel:
        """The guard of ``artifact`` (the built-in default when None), named ``name`` or after
        the artifact directory."""
        if artifact:
            path = Path(artifact)
            guard = load_artifact(path, device=device)
        else:
            from guard.defaults import default_guard

            path = DEFAULT_ARTIFACT
            guard = default_guard(path, device=device)
        if guard.model_ is None:
            raise InputError(
                f"artifact {path} has no model (fitted from features); refit it "
                f"with `guard fit --model ...` to serve it"
            )
        log.info("loaded %s", path)
        return cls(
            guard, name or path.resolve().name, geometry=geometry, artifact=path, threads=threads
        )

    @property
    def model(self) -> OnnxClassifier:
        return self.guard.require_model()

    @property
    def input_name(self) -> str:
        return self.model.input_name

    def check_name(self, name: str, allow_empty: bool = False, version: str = "") -> None:
        """Raise :class:`ModelNotFound` unless ``name`` is this model's (or empty, if allowed)
        and ``version`` the one it serves (empty = that one)."""
        if not (name == self.name or (allow_empty and not name)):
            raise ModelNotFound(f"unknown model {echo(name)}; this server serves {self.name!r}")
        if version not in self.versions:
            raise ModelNotFound(
                f"model {self.name!r} has no version {echo(version)}; its only version is "
                f"{str(self.version)!r} (empty = that one)"
            )

    @property
    def versions(self) -> tuple[str, ...]:
        """The versions a request may name: the current one, or empty (= that one)."""
        return ("", str(self.version))

    def serves(self, name: str, version: str = "") -> bool:
        """Whether ``name`` (and ``version``) is this model (what ModelReady asks)."""
        return name == self.name and version in self.versions

    def images(self, tensor: RequestTensor, what: str, max_images: int | None = None) -> np.ndarray:
        """A request tensor, validated, as float32 images (see :mod:`.decode`)."""
        return to_images(self.model, tensor, what, max_images)

    def blank_images(self, n: int = 1) -> np.ndarray:
        """``n`` all-zero images of the model's input shape (for the self-check)."""
        return blank_images(self.guard, n)

    def check_result(self, run: BatchRun) -> None:
        """The self-check: its images (one blank image; upstream mode: the reference inputs)
        went through the model and the geometry with finite numbers."""
        result = run.result
        if run.errors or result is None or len(result) < 1:
            raise RuntimeError(f"self-check inference failed: {'; '.join(run.errors)}")
        if not np.all(np.isfinite(result.logits)):
            raise RuntimeError("self-check inference failed: non-finite logits")
        if result.scores is not None and not np.isfinite(result.scores.hull_upper).all():
            raise RuntimeError("self-check inference failed: non-finite hull distance")

    def metadata(self) -> ModelMetadata:
        g = self.guard
        return ModelMetadata(
            name=self.name,
            versions=(str(self.version),),
            platform=PLATFORM,
            inputs=(TensorMetadata(self.input_name, "FP32", tuple(expected_shape(self.model))),),
            outputs=tuple(
                TensorMetadata(n, OUTPUTS[n].datatype, tuple([-1] + OUTPUTS[n].per_image(g)))
                for n in available(self.geometry)
            ),
        )

    def info(self) -> ModelInfo:
        g = self.guard
        return ModelInfo(
            model_name=self.name,
            model_sha256=self.model.sha256,
            input_shape=tuple(expected_shape(self.model)),
            class_names=tuple(g.class_names_),
            n_features=int(g.W_.shape[1]),
            n_train=int(len(g.radii_)),
            nonneg=bool(g.nonneg_),
            lipschitz=float(g.lipschitz_),
            geometry=self.geometry,
            guard_version=__version__,
            thresholds=g.thresholds_,
        )
