"""The serving layer's shape: the data plane knows no transport, ``server/`` never edits
``sys.path``, and ``guard`` commands other than ``serve`` load no serving stack. (Import cycles
are checked for the whole project by ``tests/test_layering.py``.)
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SERVER = ROOT / "server"
TRANSPORT_MODULES = ("grpc", "grpc_health", "grpc_reflection", "google.protobuf", "server.grpc")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Absolute names of the modules ``path`` imports (relative imports resolved; for
    ``from package import name`` both the package and ``package.name``)."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            out.add(target)
            out.update(f"{target}.{a.name}" for a in node.names)
    return out


def test_dataplane_imports_no_transport():
    files = sorted((SERVER / "dataplane").rglob("*.py"))
    assert len(files) >= 6
    bad = [
        (p.name, m)
        for p in files
        for m in _imports(p)
        if any(m == t or m.startswith(t + ".") for t in TRANSPORT_MODULES)
    ]
    assert not bad, bad


def test_server_never_edits_sys_path():
    offenders = [
        p.relative_to(ROOT).as_posix()
        for p in SERVER.rglob("*.py")
        if "sys.path" in p.read_text(encoding="utf-8")
    ]
    assert not offenders, offenders


def test_guard_command_loads_the_serving_stack_only_to_serve():
    code = (
        "import sys, server.cli; server.cli.build_parser();"
        "bad = [m for m in ('grpc', 'prometheus_client', 'server.grpc', 'server.app',"
        " 'server.dataplane', 'tritonclient') if m in sys.modules];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 0, res.stdout + res.stderr


def test_guard_command_runs_core_commands(tmp_path: Path):
    """``guard info`` through the installed entry point, which adds serve and demo."""
    res = subprocess.run(
        [sys.executable, "-m", "server.cli", "info", "--artifact", str(tmp_path / "missing")],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert res.returncode == 2, res.stdout + res.stderr
    assert res.stderr.startswith("guard: error:"), res.stderr
    res = subprocess.run(
        [sys.executable, "-m", "server.cli", "--help"], capture_output=True, text=True, cwd=ROOT
    )
    assert res.returncode == 0 and "serve" in res.stdout and "demo" in res.stdout, res.stdout
