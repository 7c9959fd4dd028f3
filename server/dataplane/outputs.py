"""The named outputs of the Open Inference Protocol: one table, from a batch result to tensors.

Each output has a datatype, a per-image shape and the function that takes its values from a
:class:`~server.dataplane.pipeline.BatchResult`. Outputs that need the geometry are absent when
the server runs the bare model (``geometry=False``: the "guard off" baseline).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from guard import Guard
from guard.errors import InputError

from ..errors import echo
from .pipeline import BatchResult
from .types import OutputTensor

#: numpy dtype of each output datatype (little-endian, as the protocol's raw contents are)
NUMPY_DTYPES: dict[str, str] = {"FP32": "<f4", "INT64": "<i8", "INT32": "<i4", "BOOL": "?"}


@dataclass(frozen=True)
class OutputSpec:
    datatype: str
    per_image: Callable[[Guard], list[int]]  # shape after the batch dimension
    value: Callable[[BatchResult], np.ndarray]
    geometry: bool = True  # needs the geometry (absent when it is off)
    doc: str = ""


def _scalar(_g: Guard) -> list[int]:
    return []


def _classes(g: Guard) -> list[int]:
    return [len(g.class_names_)]


def _support(g: Guard) -> list[int]:
    return [g.top_support]


def _score(name: str) -> Callable[[BatchResult], np.ndarray]:
    """A field of the result's :class:`~guard.types.Scores` (set when the geometry is on)."""
    return lambda r: getattr(r.scores, name)


def _decision(name: str) -> Callable[[BatchResult], np.ndarray]:
    """A field of the result's :class:`~guard.types.Decisions` (set when the geometry is on)."""
    return lambda r: getattr(r.decisions, name)


OUTPUTS: dict[str, OutputSpec] = {
    "logits": OutputSpec("FP32", _classes, lambda r: r.logits, False, "model logits"),
    "prediction": OutputSpec("INT64", _scalar, lambda r: r.pred, False, "argmax of the logits"),
    "abstain": OutputSpec(
        "BOOL",
        _scalar,
        _decision("abstain"),
        True,
        "do not act on the prediction (out of distribution or ambiguous)",
    ),
    "flags": OutputSpec(
        "INT32",
        _scalar,
        _decision("flags"),
        True,
        "bit mask: 1 adversarial, 2 out of distribution, 4 ambiguous",
    ),
    "margin_min": OutputSpec(
        "FP32", _scalar, _score("d_min"), True, "exact distance to the nearest decision boundary"
    ),
    "nearest_class": OutputSpec(
        "INT64", _scalar, _score("nearest_class"), True, "class across the nearest boundary"
    ),
    "hull_distance": OutputSpec(
        "FP32",
        _scalar,
        _score("hull_upper"),
        True,
        "distance to the training hull (certified upper bound)",
    ),
    "hull_lower": OutputSpec(
        "FP32", _scalar, _score("hull_lower"), True, "certified lower bound of the hull distance"
    ),
    "ambiguity": OutputSpec(
        "FP32",
        _scalar,
        _score("ambiguity"),
        True,
        "margin_min - hull_distance (negative = ambiguous)",
    ),
    "sphere_distance": OutputSpec(
        "FP32",
        _scalar,
        _score("sphere_upper"),
        True,
        "distance of x/||x|| to the hull of the normalised training features (certified upper "
        "bound)",
    ),
    "sphere_lower": OutputSpec(
        "FP32",
        _scalar,
        _score("sphere_lower"),
        True,
        "certified lower bound of sphere_distance",
    ),
    "ood_score": OutputSpec(
        "FP32",
        _scalar,
        _score("ood_score"),
        True,
        "combined out-of-distribution score (higher = more OOD)",
    ),
    "p_value": OutputSpec(
        "FP32",
        _scalar,
        _score("p_value"),
        True,
        "conformal p-value of ood_score; abstain when below the target rate",
    ),
    "in_union": OutputSpec(
        "BOOL", _scalar, _score("in_union"), True, "inside the union of learned regions"
    ),
    "margins": OutputSpec(
        "FP32",
        _classes,
        _score("margins"),
        True,
        "distance to each class's boundary (NaN at the prediction)",
    ),
    "support_indices": OutputSpec(
        "INT64",
        _support,
        _score("support_idx"),
        True,
        "training images supporting the hull projection (-1 = none)",
    ),
    "support_weights": OutputSpec(
        "FP32", _support, _score("support_alpha"), True, "their convex weights"
    ),
}
#: Outputs sent only when asked for: the large ones, and the spherical hull distance (added after
#: clients had pinned the default set).
ON_REQUEST = ("margins", "support_indices", "support_weights", "sphere_distance", "sphere_lower")
#: The outputs that need the spherical hull's distance (computed only for batches that ask).
SPHERE_OUTPUTS = frozenset({"sphere_distance", "sphere_lower"})
DEFAULT_OUTPUTS = [n for n in OUTPUTS if n not in ON_REQUEST]


def available(geometry: bool) -> list[str]:
    """Every output this server offers, in table order."""
    return [n for n, spec in OUTPUTS.items() if geometry or not spec.geometry]


def requested_outputs(names: Sequence[str], geometry: bool) -> list[str]:
    """The outputs to return: ``names``, checked (each at most once), or the defaults when it is
    empty."""
    names = list(names) or [n for n in DEFAULT_OUTPUTS if geometry or not OUTPUTS[n].geometry]
    seen: set[str] = set()
    for n in names:
        if n not in OUTPUTS:
            raise InputError(f"unknown output {echo(n)}; available: {', '.join(OUTPUTS)}")
        if n in seen:  # each copy would be a full copy of the tensor in the response
            raise InputError(f"output {n!r} requested more than once; ask for each output once")
        seen.add(n)
        if OUTPUTS[n].geometry and not geometry:
            raise InputError(f"output {n!r} needs the geometry, which this server has disabled")
    return names


def output_tensors(names: Sequence[str], result: BatchResult) -> tuple[OutputTensor, ...]:
    """The named outputs of ``result`` (``B`` images), each ``(B, *per_image)``."""
    out = []
    for n in names:
        spec = OUTPUTS[n]
        arr = np.ascontiguousarray(spec.value(result), dtype=NUMPY_DTYPES[spec.datatype])
        out.append(OutputTensor(n, spec.datatype, arr))
    return tuple(out)
