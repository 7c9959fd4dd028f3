"""The committed generated code is what ``server.codegen`` generates from ``proto/`` (protoc plus
its post-processing), and the geometry core (``guard/``) never imports the serving stack."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from server import codegen

ROOT = Path(__file__).resolve().parents[2]


def test_generated_code_is_not_stale(tmp_path):
    """protoc + the same post-processing, into a fresh folder: byte for byte what is committed."""
    fresh = codegen.generate(tmp_path / "gen")
    fresh_rel = sorted(p.relative_to(tmp_path / "gen").as_posix() for p in fresh)
    committed_rel = sorted(
        p.relative_to(codegen.GEN_DIR).as_posix()
        for p in codegen.GEN_DIR.rglob("*.py*")
        if "__pycache__" not in p.parts
    )
    assert fresh_rel == committed_rel
    # _pb2.py, _pb2.pyi, _pb2_grpc.py and an __init__ per proto; the package __init__
    assert len(fresh_rel) == 4 * len(codegen.PROTOS) + 1
    stale = [
        rel
        for rel in fresh_rel
        if (tmp_path / "gen" / rel).read_bytes() != (codegen.GEN_DIR / rel).read_bytes()
    ]
    assert not stale, f"regenerate with `python -m server.codegen`: {stale} differ"


def test_generated_code_is_an_ordinary_package():
    """Relative imports between generated modules, the private pool, unchanged wire names."""
    from server.grpc import gen
    from server.grpc.gen.guard_v1 import guard_pb2
    from server.grpc.gen.inference import grpc_service_pb2, grpc_service_pb2_grpc

    for path in codegen.GEN_DIR.rglob("*_pb2*.py"):
        text = path.read_text()
        assert not re.search(r"^from (inference|guard_v1)\b", text, re.MULTILINE), path
        assert "_descriptor_pool.Default()" not in text, path
    assert grpc_service_pb2.DESCRIPTOR.pool is gen.POOL
    assert guard_pb2.DESCRIPTOR.pool is gen.POOL
    assert grpc_service_pb2.ModelInferRequest.__module__ == grpc_service_pb2.__name__
    names = {
        s.full_name
        for s in (
            *grpc_service_pb2.DESCRIPTOR.services_by_name.values(),
            *guard_pb2.DESCRIPTOR.services_by_name.values(),
        )
    }
    assert names == {"inference.GRPCInferenceService", "guard.v1.GuardService"}
    assert grpc_service_pb2_grpc.inference_dot_grpc__service__pb2 is grpc_service_pb2


def test_postprocess_fails_loudly_on_unexpected_output():
    from pathlib import PurePosixPath

    with pytest.raises(RuntimeError, match="protoc's output changed"):
        codegen.postprocess(
            PurePosixPath("inference/x_pb2.py"), "# nothing to rewrite\n", {"inference"}
        )


def test_every_proto_is_generated():
    protos = sorted(
        p.relative_to(codegen.PROTO_DIR).as_posix() for p in codegen.PROTO_DIR.rglob("*.proto")
    )
    assert protos == sorted(codegen.PROTOS)


_FORBIDDEN = re.compile(
    r"^\s*(?:import\s+(?:grpc|grpc_\w+|prometheus_client|server|tritonclient)\b"
    r"|from\s+(?:grpc|grpc_\w+|prometheus_client|server|tritonclient)\b[\w.]*\s+import\b)",
    re.MULTILINE,
)


def test_guard_core_does_not_import_the_serving_stack():
    files = sorted((ROOT / "guard").rglob("*.py"))
    assert len(files) > 5
    offenders = []
    for path in files:
        text = path.read_text(encoding="utf-8")
        for m in _FORBIDDEN.finditer(text):
            offenders.append(f"{path.relative_to(ROOT)}: {m.group(0).strip()}")
        if "prometheus_client" in text:
            offenders.append(f"{path.relative_to(ROOT)}: mentions prometheus_client")
        if re.search(r"\bimport grpc\b", text) or re.search(r"\bimport server\b", text):
            offenders.append(f"{path.relative_to(ROOT)}: import grpc/server")
    assert not offenders, offenders


def test_forbidden_pattern_catches_imports():
    for line in (
        "import grpc",
        "from grpc import aio",
        "import server.app",
        "from server.grpc.convert import infer_request",
        "  from prometheus_client import Counter",
        "import grpc_health.v1",
    ):
        assert _FORBIDDEN.search(line), line
    for line in (
        '_SERVING = {"serve": "server.cli"}',
        "# the server (later) maps errors",
        "from .server_utils import x",
    ):
        assert not _FORBIDDEN.search(line), line
