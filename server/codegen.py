"""Generate ``server/grpc/gen`` from ``proto/`` with grpc_tools (``python -m server.codegen``).

protoc's Python output imports its siblings as top-level modules (``from inference import
grpc_service_pb2``) and registers every file in protobuf's default descriptor pool, where
tritonclient registers its own copy of the same ``inference.*`` messages: the two cannot share a
process. So the output is post-processed, mechanically and nothing else:

* imports of sibling generated modules become relative (``from ..inference import ...``), so
  ``server.grpc.gen`` is an ordinary package;
* ``_pb2`` modules add their file to :data:`server.grpc.gen.POOL`, a private pool, instead of
  the default pool (the wire names, e.g. ``inference.GRPCInferenceService``, do not change);
* message classes get their real module name (``__name__``) instead of the proto path.

Type stubs (``_pb2.pyi``) are generated beside the modules, so mypy knows the message classes.

Every rewrite must apply exactly as expected, or generation fails (a new protoc whose output
looks different is noticed, not half-rewritten). The package ``__init__`` files are generated as
well. The output is committed and never edited by hand; a test regenerates it into a temporary
folder and fails if the committed files differ.
"""

from __future__ import annotations

import re
import sys
import tempfile
from pathlib import Path, PurePosixPath

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
GEN_DIR = Path(__file__).resolve().parent / "grpc" / "gen"
PROTOS = ("inference/grpc_service.proto", "guard_v1/guard.proto")

HEADER = (
    "# Post-processed by `python -m server.codegen` (relative imports, private descriptor pool).\n"
)
ROOT_INIT = '''"""Code generated from ``proto/`` by ``python -m server.codegen``; never edit it.

The generated ``_pb2`` modules add their descriptors to :data:`POOL`, a private descriptor
pool, not to protobuf's default pool: tritonclient registers its own copy of the Open Inference
Protocol messages (``inference.*``) in the default pool, and one pool cannot hold two files
that define the same names. The wire names (``inference.GRPCInferenceService``, ...) are
unchanged.
Under protobuf's pure-Python implementation (``PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python``,
never the default) the symbol database still copies every message into the default pool, so
there the two cannot share a process.
"""

from google.protobuf import descriptor_pool

POOL = descriptor_pool.DescriptorPool()
'''
SUB_INIT = '"""Generated from ``proto/{name}/`` by ``python -m server.codegen``: never edit."""\n'

_ADD_DEFAULT = "DESCRIPTOR = _descriptor_pool.Default().AddSerializedFile("
_ADD_PRIVATE = "DESCRIPTOR = _POOL.AddSerializedFile("
_IMPORTS_END = "# @@protoc_insertion_point(imports)\n"
_BUILD = re.compile(r"_builder\.BuildTopDescriptorsAndMessages\(DESCRIPTOR, '[\w.]+', _globals\)")
_WELL_KNOWN = re.compile(r"^from google\.protobuf import \w+_pb2\b", re.MULTILINE)


def _sibling_import(top_packages: set[str]) -> re.Pattern[str]:
    names = "|".join(sorted(re.escape(p) for p in top_packages))
    return re.compile(rf"^from ((?:{names})(?:\.\w+)*) import (\w+_pb2) as (\w+)$", re.MULTILINE)


def _replace_once(text: str, old: str, new: str, rel: PurePosixPath) -> str:
    if text.count(old) != 1:
        raise RuntimeError(
            f"codegen: expected {old!r} once in {rel}, found {text.count(old)}; "
            f"protoc's output changed: update server/codegen.py"
        )
    return text.replace(old, new)


def postprocess(rel: PurePosixPath, text: str, top_packages: set[str]) -> str:
    """One generated module (or stub), rewritten as the module docstring says. ``rel`` is its
    path under the output folder, e.g. ``inference/grpc_service_pb2.py``."""
    up = "." * len(rel.parts)  # from inference/x.py, ".." is the gen package
    text = _sibling_import(top_packages).sub(rf"from {up}\1 import \2 as \3", text)
    if rel.name.endswith("_pb2.py"):
        if _WELL_KNOWN.search(text):
            raise RuntimeError(
                f"codegen: {rel} imports a protobuf well-known type, which is "
                f"not in the private pool; add it to POOL first"
            )
        text = _replace_once(text, _ADD_DEFAULT, _ADD_PRIVATE, rel)
        text = _replace_once(
            text, _IMPORTS_END, f"from {up} import POOL as _POOL\n{_IMPORTS_END}", rel
        )
        text, n = _BUILD.subn(
            "_builder.BuildTopDescriptorsAndMessages(DESCRIPTOR, __name__, _globals)", text
        )
        if n != 1:
            raise RuntimeError(f"codegen: expected one BuildTopDescriptorsAndMessages in {rel}")
    return HEADER + text


def generate(out_dir: Path = GEN_DIR) -> list[Path]:
    """Run protoc on every proto, post-process, write under ``out_dir``; the files written."""
    from grpc_tools import protoc

    top_packages = {PurePosixPath(rel).parts[0] for rel in PROTOS}
    written: list[Path] = []
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp)
        for rel in PROTOS:
            args = [
                "protoc",
                f"-I{PROTO_DIR}",
                f"--python_out={raw}",
                f"--pyi_out={raw}",
                f"--grpc_python_out={raw}",
                str(PROTO_DIR / rel),
            ]
            if protoc.main(args) != 0:
                raise RuntimeError(f"protoc failed on {rel}")
        for path in sorted(raw.rglob("*_pb2*.py*")):
            rel_path = PurePosixPath(path.relative_to(raw).as_posix())
            text = postprocess(rel_path, path.read_text(encoding="utf-8"), top_packages)
            written.append(_write(out_dir / rel_path, text))
    written.append(_write(out_dir / "__init__.py", ROOT_INIT))
    for package in sorted(top_packages):
        written.append(_write(out_dir / package / "__init__.py", SUB_INIT.format(name=package)))
    return sorted(written)


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


if __name__ == "__main__":
    for written_path in generate(Path(sys.argv[1]) if len(sys.argv) > 1 else GEN_DIR):
        print(written_path)  # noqa: T201 - the list of files is this script's output
