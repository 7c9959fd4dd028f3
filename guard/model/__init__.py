"""The classifier: an ONNX adapter that gives logits and penultimate features in one run
(:mod:`.onnx`; the final affine layer is found by :mod:`.head`, external weights are embedded by
:mod:`.external`), and the torch helpers that export and define the default models
(:mod:`.export`, :mod:`.nets`; torch is imported only by those)."""

from __future__ import annotations

from .head import AffineHead, find_affine_head, split_affine_head
from .onnx import OnnxClassifier, available_providers, sha256_bytes

__all__ = [
    "AffineHead",
    "OnnxClassifier",
    "available_providers",
    "find_affine_head",
    "sha256_bytes",
    "split_affine_head",
]
