"""The classifier: an ONNX adapter that gives logits and penultimate features in one run
(:mod:`.onnx`), and the torch helpers that export and define the default models (:mod:`.export`,
:mod:`.nets`; torch is imported only by those)."""

from __future__ import annotations

from .onnx import OnnxClassifier, available_providers, sha256_bytes, split_affine_head

__all__ = ["OnnxClassifier", "available_providers", "sha256_bytes", "split_affine_head"]
