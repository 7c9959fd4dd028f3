"""A differentiable torch twin of any ONNX classifier, checked against onnxruntime before use.

The pre-images of :mod:`guard.inversion` need gradients of the penultimate features with respect
to the input. :meth:`TorchTwin.from_onnx` converts the classifier's ONNX graph with onnx2torch
(PyPI), cut to what computes the logits and the features (the input of the final affine layer,
as :mod:`.head` finds it, including the spatial mean of a convolution head).
:meth:`TorchTwin.from_module` wraps a torch module given as such (e.g. the default model's
``FashionResNet`` with its weights). Either way :meth:`TorchTwin.verify` runs the twin and the
ONNX model through onnxruntime on the same inputs and refuses the twin (:class:`ModelError`)
unless logits and features agree to ``rtol`` (default 1e-5) of their largest magnitude.

torch and onnx2torch are optional (the ``torch`` extra); :func:`require_torch` and
:func:`import_onnx2torch` say how to install them. onnx2torch declares torchvision as a
dependency but only its NMS and RoIAlign converters (object detection, never in a classifier)
use it, and no torchvision build installs beside the pinned CPU torch: it is installed without
dependencies (``pip install --no-deps onnx2torch==1.5.15``) and a stand-in module answers those
two converters with an error.
"""

from __future__ import annotations

import importlib
import sys
import types
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx

from ..errors import InputError, ModelError
from .onnx import OnnxClassifier

__all__ = ["TorchTwin", "TwinCheck", "import_onnx2torch", "require_torch"]

#: How to install what the twin needs.
INSTALL_TORCH = "pip install 'guard-classifier[torch]'"
INSTALL_ONNX2TORCH = "pip install --no-deps onnx2torch==1.5.15"
#: Default agreement of twin and onnxruntime: relative to the largest magnitude (at least 1).
TWIN_RTOL = 1e-5


def require_torch() -> Any:
    """The ``torch`` module, or an InputError saying how to install it."""
    try:
        import torch
    except ImportError:
        raise InputError(
            f"pre-images need torch (gradients through the model): {INSTALL_TORCH}"
        ) from None
    return torch


def _no_torchvision(*_: Any, **__: Any) -> Any:
    raise ModelError(
        "this model uses an object-detection operator (NonMaxSuppression or RoiAlign) that "
        "onnx2torch runs with torchvision, which is not installed: not a classifier guard supports"
    )


def import_onnx2torch() -> Any:
    """The ``onnx2torch`` module; a stand-in for torchvision's ``ops`` while it is imported
    when torchvision is missing or broken (see the module docstring)."""
    require_torch()
    if "onnx2torch" in sys.modules:
        return sys.modules["onnx2torch"]
    saved = {k: sys.modules.get(k) for k in ("torchvision", "torchvision.ops")}
    try:
        importlib.import_module("torchvision.ops")
        shim = False
    except Exception:  # noqa: BLE001 - missing (ImportError) or a build for another torch
        shim = True
        tv, ops = types.ModuleType("torchvision"), types.ModuleType("torchvision.ops")
        ops.nms = ops.box_convert = ops.roi_align = _no_torchvision  # type: ignore[attr-defined]
        tv.ops = ops  # type: ignore[attr-defined]
        sys.modules["torchvision"], sys.modules["torchvision.ops"] = tv, ops
    try:
        return importlib.import_module("onnx2torch")
    except ImportError:
        raise InputError(
            f"converting an ONNX model to torch needs onnx2torch: {INSTALL_ONNX2TORCH}"
        ) from None
    finally:
        if shim:  # the stand-in stays private to onnx2torch
            for k, v in saved.items():
                if v is None:
                    sys.modules.pop(k, None)
                else:
                    sys.modules[k] = v


@dataclass(frozen=True)
class TwinCheck:
    """Largest difference twin - onnxruntime on ``n`` inputs, relative to the largest
    magnitude of each output (at least 1)."""

    n: int
    logits_error: float
    features_error: float


def _pruned(model: OnnxClassifier) -> onnx.ModelProto:
    """The model's graph with outputs (logits, features) and only the nodes they need."""
    proto = onnx.load_from_string(model.data)
    g = proto.graph
    nodes = list(g.node) + list(model.head.feature_nodes)
    producer = {o: i for i, n in enumerate(nodes) for o in n.output}
    need, todo = set(), [model.logits_name, model.features_name]
    while todo:
        i = producer.get(todo.pop())
        if i is None or i in need:
            continue
        need.add(i)
        todo.extend(nodes[i].input)
    kept = [nodes[i] for i in sorted(need)]
    del g.node[:]
    g.node.extend(kept)
    del g.output[:]
    for name in (model.logits_name, model.features_name):
        g.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    return proto


def _sloped_relu(torch: Any, slope: list[float]) -> Any:
    """A ReLU module whose negative slope is ``slope[0]`` (0: exactly ReLU)."""

    class SlopedReLU(torch.nn.Module):
        def forward(self, x: Any) -> Any:
            a = slope[0]
            return torch.relu(x) if a == 0 else torch.nn.functional.leaky_relu(x, a)

    return SlopedReLU()


def _replace_relus(torch: Any, module: Any, slope: list[float]) -> int:
    """Replace every ``nn.ReLU`` inside ``module`` by a sloped one sharing ``slope``."""
    n = 0
    for name, child in list(module.named_children()):
        if isinstance(child, torch.nn.ReLU):
            setattr(module, name, _sloped_relu(torch, slope))
            n += 1
        else:
            n += _replace_relus(torch, child, slope)
    return n


class TorchTwin:
    """A torch function ``x -> (logits, features)`` that computes what an ONNX classifier does.

    Args:
        module: a torch module (eval mode, frozen) whose forward returns ``(logits, features)``.
        input_shape: one input's shape (no batch axis).
        fixed_batch: the batch size the ONNX model was exported with (``None``: any); the twin
            then runs in chunks of it.
        source: how the twin was made, for messages.
    """

    def __init__(
        self,
        module: Any,
        input_shape: tuple[int, ...],
        fixed_batch: int | None = None,
        source: str = "",
    ) -> None:
        torch = require_torch()
        self.module = module.eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.input_shape = tuple(int(d) for d in input_shape)
        self.fixed_batch = fixed_batch
        self.source = source
        self.check: TwinCheck | None = None
        self._torch = torch
        # ReLU modules get a negative slope that the pre-image solver may open for a while
        # (a homotopy through leaky ReLUs: dead units keep a gradient); 0 is the model itself.
        self._slope = [0.0]
        self.n_relus = _replace_relus(torch, self.module, self._slope)

    def set_relu_slope(self, slope: float) -> None:
        """Negative slope of the twin's ReLUs (0: the model; > 0: a leaky relaxation of it).
        Only ``nn.ReLU`` modules are affected (all of onnx2torch's); see :attr:`n_relus`."""
        if not 0 <= slope < 1:
            raise InputError(f"expected a ReLU slope in [0, 1), got {slope}")
        self._slope[0] = float(slope)

    # ---------------------------------------------------------------- construction
    @classmethod
    def from_onnx(
        cls, model: OnnxClassifier, x_check: np.ndarray, *, rtol: float = TWIN_RTOL
    ) -> TorchTwin:
        """onnx2torch's conversion of ``model``, verified on the inputs ``x_check``."""
        o2t = import_onnx2torch()
        shape = _input_shape(model, x_check)
        try:
            module = o2t.convert(_pruned(model))
        except Exception as exc:  # noqa: BLE001 - onnx2torch raises many types for one cause
            raise ModelError(
                f"onnx2torch cannot convert this model to torch ({type(exc).__name__}: {exc}); "
                f"pre-images need a differentiable twin"
            ) from None
        twin = cls(module, shape, model.fixed_batch, source="onnx2torch")
        twin.verify(model, x_check, rtol=rtol)
        return twin

    @classmethod
    def from_module(
        cls,
        module: Any,
        features: Callable[[Any], Any],
        head: Callable[[Any], Any],
        model: OnnxClassifier,
        x_check: np.ndarray,
        *,
        rtol: float = TWIN_RTOL,
    ) -> TorchTwin:
        """A torch module given as such: ``features(x)`` the penultimate features and
        ``head(f)`` the logits (e.g. ``net.features`` and ``net.fc``), verified against
        ``model`` on ``x_check``."""
        torch = require_torch()

        class _Both(torch.nn.Module):  # type: ignore[name-defined]  # torch is a runtime value
            def __init__(self) -> None:
                super().__init__()
                self.net = module

            def forward(self, x: Any) -> tuple[Any, Any]:
                f = features(x)
                return head(f), f

        twin = cls(_Both(), _input_shape(model, x_check), None, source=type(module).__name__)
        twin.verify(model, x_check, rtol=rtol)
        return twin

    # ---------------------------------------------------------------- running
    def forward(self, x: Any) -> tuple[Any, Any]:
        """``x`` (B, *input_shape) tensor -> (logits (B, n), features (B, f)), differentiable."""
        torch = self._torch
        if tuple(x.shape[1:]) != self.input_shape:
            raise InputError(f"expected inputs (B, {self.input_shape}), got {tuple(x.shape)}")
        k = self.fixed_batch
        if k is None or len(x) == k:
            out = self.module(x)
            return out[0].reshape(len(x), -1), out[1].reshape(len(x), -1)
        logits, feats = [], []
        for lo in range(0, len(x), k):
            chunk = x[lo : lo + k]
            m = len(chunk)
            if m < k:  # pad with copies of the last input; their outputs are dropped
                chunk = torch.cat([chunk, chunk[-1:].expand(k - m, *chunk.shape[1:])])
            z, f = self.module(chunk)
            logits.append(z.reshape(k, -1)[:m])
            feats.append(f.reshape(k, -1)[:m])
        return torch.cat(logits), torch.cat(feats)

    def features(self, x: Any) -> Any:
        """Penultimate features (B, f) of a tensor batch, differentiable."""
        return self.forward(x)[1]

    def run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """numpy inputs -> numpy (logits, features), float64."""
        torch = self._torch
        with torch.no_grad():
            t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
            z, f = self.forward(t)
        return z.to(torch.float64).numpy(), f.to(torch.float64).numpy()

    def verify(self, model: OnnxClassifier, x: np.ndarray, *, rtol: float = TWIN_RTOL) -> TwinCheck:
        """Compare the twin with onnxruntime on inputs ``x``; ModelError unless both the logits
        and the features agree to ``rtol`` of their largest magnitude (at least 1)."""
        x = model.prepare(x)
        ref_z, ref_f = model.run(x)
        self.set_relu_slope(0.0)
        try:
            z, f = self.run(x)
        except Exception as exc:  # noqa: BLE001 - a broken conversion fails in many ways
            raise ModelError(
                f"the torch twin ({self.source}) fails on the model's inputs "
                f"({type(exc).__name__}: {exc})"
            ) from None
        errs = []
        for name, got, want in (("logits", z, ref_z), ("features", f, ref_f)):
            if got.shape != want.shape:
                raise ModelError(
                    f"the torch twin ({self.source}) gives {name} of shape {got.shape}, "
                    f"onnxruntime {want.shape}: refused"
                )
            scale = max(1.0, float(np.abs(want).max()))
            err = float(np.abs(got - want.astype(np.float64)).max() / scale)
            if not err <= rtol:
                raise ModelError(
                    f"the torch twin ({self.source}) differs from onnxruntime on {len(x)} "
                    f"inputs: {name} by {err:.2e} of their largest magnitude (allowed "
                    f"{rtol:.0e}); pre-images computed through it would not be the model's: "
                    f"refused"
                )
            errs.append(err)
        self.check = TwinCheck(len(x), errs[0], errs[1])
        return self.check


def _input_shape(model: OnnxClassifier, x: np.ndarray) -> tuple[int, ...]:
    x = model.prepare(x)  # checks the shape against the model's
    return tuple(int(d) for d in x.shape[1:])
