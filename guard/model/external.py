"""ONNX external data: weights stored in files beside the ``.onnx`` file (torch 2.13's default
exporter writes ``model.onnx`` + ``model.onnx.data``).

:func:`embed_external_data` reads every such tensor into the model, so the model in memory is
self-contained: one byte string whose sha256 covers the weights, and that an artifact can store
as one file. Locations are resolved against the model FILE's directory, never the working
directory, and must stay inside it (relative, no ``..``, no symlink out of it): a model file is
not allowed to make guard read arbitrary files.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import onnx
from onnx import AttributeProto, TensorProto

from ..errors import ModelError

__all__ = ["embed_external_data", "uses_external_data"]


def _graph_tensors(graph: onnx.GraphProto) -> Iterator[TensorProto]:
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    for node in graph.node:
        yield from _node_tensors(node)


def _node_tensors(node: onnx.NodeProto) -> Iterator[TensorProto]:
    for a in node.attribute:
        if a.type == AttributeProto.TENSOR:
            yield a.t
        elif a.type == AttributeProto.TENSORS:
            yield from a.tensors
        elif a.type == AttributeProto.SPARSE_TENSOR:
            yield a.sparse_tensor.values
            yield a.sparse_tensor.indices
        elif a.type == AttributeProto.GRAPH:
            yield from _graph_tensors(a.g)
        elif a.type == AttributeProto.GRAPHS:
            for g in a.graphs:
                yield from _graph_tensors(g)


def _all_tensors(model: onnx.ModelProto) -> Iterator[TensorProto]:
    """Every tensor of the model: initializers, constants, subgraphs and local functions."""
    yield from _graph_tensors(model.graph)
    for fn in model.functions:
        for node in fn.node:
            yield from _node_tensors(node)


def _is_external(t: TensorProto) -> bool:
    return t.data_location == TensorProto.EXTERNAL


def uses_external_data(model: onnx.ModelProto) -> bool:
    """Whether any tensor of ``model`` is stored outside the model file."""
    return any(_is_external(t) for t in _all_tensors(model))


def _resolve(location: str, base: Path, tensor: str, model_path: Path) -> Path:
    """The file of a tensor's external data, refused unless it lies inside ``base``."""
    where = f"tensor '{tensor}' of {model_path} has its data in '{location}'"
    inside = "external data must be a relative path inside the model's directory"
    parts = [p for p in re.split(r"[\\/]+", location) if p]
    if not parts:
        raise ModelError(f"{where}: an empty location")
    if os.path.isabs(location) or location[0] in "/\\" or re.match(r"^[A-Za-z]:", location):
        raise ModelError(f"{where}: an absolute path, outside the model's directory ({inside})")
    if ".." in parts:
        raise ModelError(f"{where}: '..' points outside the model's directory ({inside})")
    path = base.joinpath(*parts)
    real_base = base.resolve()
    real = path.resolve()
    if real != real_base and real_base not in real.parents:
        raise ModelError(
            f"{where}: it resolves to {real}, outside the model's directory {real_base} "
            f"(through a symbolic link; {inside})"
        )
    return path


def _read(path: Path, offset: int, length: int | None, tensor: str, location: str) -> bytes:
    if not path.is_file():
        raise ModelError(
            f"external data file '{location}' of tensor '{tensor}' not found: expected {path}, "
            f"beside the model file"
        )
    size = path.stat().st_size
    end = size if length is None else offset + length
    if offset < 0 or end > size or end < offset:
        raise ModelError(
            f"external data file {path} of tensor '{tensor}' has {size} bytes; the model reads "
            f"bytes {offset}..{end}: the file is truncated or belongs to another model"
        )
    with open(path, "rb") as fh:
        fh.seek(offset)
        return fh.read(end - offset)


def embed_external_data(model: onnx.ModelProto, model_path: Path | None) -> bool:
    """Read every external tensor of ``model`` (in place) from beside ``model_path``.

    Args:
        model: a model parsed without its external data (``onnx.load_from_string``).
        model_path: the ``.onnx`` file it was read from; ``None`` for a model given as bytes,
            which then must not use external data.

    Returns:
        Whether any tensor was external (the model then differs from the file's bytes).

    Raises:
        ModelError: a location outside the model's directory, a missing or short file, or
            external data without a model path.
    """
    external = [t for t in _all_tensors(model) if _is_external(t)]
    if not external:
        return False
    for t in external:
        info = {e.key: e.value for e in t.external_data}
        location = info.get("location", "")
        if model_path is None:
            raise ModelError(
                f"tensor '{t.name}' is stored in the external file '{location}': pass the path "
                f"of the .onnx file (not its bytes) so that the data beside it can be read"
            )
        try:
            offset = int(info.get("offset") or 0)
            length = int(info["length"]) if info.get("length") else None
        except ValueError:
            raise ModelError(
                f"tensor '{t.name}' of {model_path}: bad external data offset/length {info}"
            ) from None
        path = _resolve(location, model_path.parent, t.name, model_path)
        t.raw_data = _read(path, offset, length, t.name, location)
        del t.external_data[:]
        t.data_location = TensorProto.DEFAULT
    return True
