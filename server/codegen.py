"""Generate ``server/gen`` from ``proto/`` with grpc_tools (``python -m server.codegen``).

The generated files are committed and never edited by hand; a test regenerates them into a
temporary folder and fails if the committed ones differ.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
GEN_DIR = Path(__file__).resolve().parent / "gen"
PROTOS = ("inference/grpc_service.proto", "guard_v1/guard.proto")


def generate(out_dir: Path = GEN_DIR) -> list[Path]:
    """Run protoc on every proto; return the generated files."""
    from grpc_tools import protoc

    out_dir.mkdir(parents=True, exist_ok=True)
    for rel in PROTOS:
        (out_dir / Path(rel).parent).mkdir(parents=True, exist_ok=True)
        args = ["protoc", f"-I{PROTO_DIR}", f"--python_out={out_dir}",
                f"--grpc_python_out={out_dir}", str(PROTO_DIR / rel)]
        if protoc.main(args) != 0:
            raise RuntimeError(f"protoc failed on {rel}")
    return sorted(p for p in out_dir.rglob("*_pb2*.py"))


if __name__ == "__main__":
    for path in generate(Path(sys.argv[1]) if len(sys.argv) > 1 else GEN_DIR):
        print(path)
