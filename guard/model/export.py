"""Export a torch module to ONNX and check that the export computes the same logits.

torch is imported lazily inside :func:`export_torch_to_onnx`, so ``import guard.model.export`` works
without torch installed.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ModelError

__all__ = ["export_torch_to_onnx"]


def export_torch_to_onnx(
    module: Any,
    example_input: Any,
    path: str | Path,
    input_name: str = "input",
    output_name: str = "logits",
    rtol: float = 1e-4,
    atol: float = 1e-5,
) -> Path:
    """Export ``module`` (put in eval mode) to ONNX at ``path`` and verify it.

    Uses the legacy TorchScript exporter (``dynamo=False``, opset 17) with a dynamic batch axis
    on the single input and output. The file is then checked with ``onnx.checker.check_model``
    and run with onnxruntime (CPU) on ``example_input``; its logits must match torch's to
    ``rtol`` (relative, plus a small ``atol`` for logits near zero).

    Args:
        module: a ``torch.nn.Module`` with one tensor input and one tensor output.
        example_input: a ``torch.Tensor`` (e.g. ``float32 [B, 1, 28, 28]``) used for tracing and
            for the numerical check.
        path: where to write the ``.onnx`` file (parent folders are created).
        input_name: ONNX name of the input.
        output_name: ONNX name of the output.

    Returns:
        The path of the written file.

    Raises:
        ModelError: the export fails, the model does not pass the checker, or onnxruntime's
            output differs from torch's.
    """
    import onnx
    import onnxruntime as ort
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    module.eval()
    with torch.no_grad():
        expected = module(example_input).detach().cpu().numpy()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", FutureWarning)
            torch.onnx.export(
                module,
                (example_input,),
                str(path),
                dynamo=False,
                opset_version=17,
                input_names=[input_name],
                output_names=[output_name],
                dynamic_axes={input_name: {0: "batch"}, output_name: {0: "batch"}},
            )
    except Exception as err:  # noqa: BLE001 - any exporter failure is a model problem
        raise ModelError(f"ONNX export to {path} failed: {err}") from err
    try:
        onnx.checker.check_model(onnx.load(str(path)))
    except Exception as err:  # noqa: BLE001
        raise ModelError(f"exported ONNX model {path} fails onnx.checker: {err}") from err
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = {input_name: example_input.detach().cpu().numpy()}
    (got,) = session.run([output_name], feed)
    if got.shape != expected.shape or not np.allclose(got, expected, rtol=rtol, atol=atol):
        diff = (
            float(np.max(np.abs(got - expected))) if got.shape == expected.shape else float("nan")
        )
        raise ModelError(
            f"ONNX model {path} disagrees with torch: output shape {got.shape} vs "
            f"{expected.shape}, "
            f"max abs diff {diff:.3g} (rtol {rtol})"
        )
    return path
