"""The layers stay visible: the import graph of ``guard/`` and ``server/``, computed from the
source (every import statement, including those inside functions and ``TYPE_CHECKING`` blocks),
has no cycle, and the arrows point one way (CONVENTIONS.md, "The shape of the system")."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("guard", "server")
GENERATED = ("server.gen", "server.grpc.gen")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    mods = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            name = _module_name(path)
            if not name.startswith(GENERATED):
                mods[name] = path
    return mods


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Project modules that module ``name`` imports anywhere in its source."""
    is_pkg = path.name == "__init__.py"
    package = name if is_pkg else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            # ``from pkg import sub`` imports the submodule when there is one
            targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in known else mod for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in known:  # ``import a.b.c`` of a function or class: its module
                t = t.rpartition(".")[0]
            if t and t != name:
                out.add(t)
    return out


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    known = set(mods)
    return {name: _imports(name, path, known) for name, path in mods.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_graph_is_read_from_the_source() -> None:
    g = _graph()
    assert "guard.estimator" in g and "server.cli" in g
    assert "guard.geometry.hull" in g["guard.estimator"]
    assert "guard.cli" in g["server.cli"]


def test_cycle_detection_finds_a_planted_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle() -> None:
    cycles = _cycles(_graph())
    assert not cycles, f"import cycles: {cycles}"


def test_geometry_imports_nothing_else_of_the_project() -> None:
    bad = {
        m: sorted(d for d in deps if not d.startswith("guard.geometry"))
        for m, deps in _graph().items()
        if m.startswith("guard.geometry")
    }
    bad = {m: d for m, d in bad.items() if d}
    assert not bad, f"guard.geometry must be self-contained: {bad}"


def test_the_core_never_imports_the_server() -> None:
    bad = {
        m: sorted(d for d in deps if d.startswith("server"))
        for m, deps in _graph().items()
        if m.startswith("guard")
    }
    bad = {m: d for m, d in bad.items() if d}
    assert not bad, f"guard/ must not import server/: {bad}"


@pytest.mark.parametrize("module", ["grpc", "prometheus_client", "torch", "matplotlib"])
def test_core_import_loads_no_serving_stack_torch_or_plots(module: str) -> None:
    code = (
        "import sys, guard, guard.cli, guard.defaults, guard.datasets, guard.detectors, "
        "guard.evaluation.ood;"
        f"sys.exit(1 if {module!r} in sys.modules else 0)"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, f"importing the core loaded {module}: {res.stderr}"


def test_transports_do_not_import_each_other_and_the_data_plane_neither() -> None:
    g = _graph()
    rules = {
        "server.dataplane": ("server.grpc", "server.http"),
        "server.grpc": ("server.http",),
        "server.http": ("server.grpc",),
    }
    bad = {
        m: sorted(d for d in deps if d.startswith(forbidden))
        for layer, forbidden in rules.items()
        for m, deps in g.items()
        if m.startswith(layer)
    }
    bad = {m: d for m, d in bad.items() if d}
    assert not bad, f"transports must stay independent of each other: {bad}"
