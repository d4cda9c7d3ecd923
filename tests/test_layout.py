"""The layout's promises: no import cycle, the report reads results only, no module much over 400 lines."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {"malleability": "malleability", "theory": "malleability.theory", "properties": "malleability.properties",
           "empirics": "malleability.empirics", "reports": "malleability.reports"}
MAX_LINES = 450


def _modules() -> dict[str, Path]:
    out = {}
    for folder, package in FOLDERS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT / folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            out[".".join([package, *parts])] = path
    return out


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name:
                found.add(name)
    return found


def _graph():
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        # a module importing its own package (a registry it registers with) is the registry pattern, not a cycle
        graph[name] = {m for m in _imports(path, modules) if m != name and not name.startswith(m + ".")}
    return graph


def test_no_import_cycle():
    graph = _graph()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):] + [nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if state.get(nxt) is None:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if state.get(node) is None:
            visit(node)


def test_the_report_reads_results_only():
    graph = _graph()
    for name, deps in graph.items():
        if name.startswith("malleability.reports.report"):
            bad = {d for d in deps if d.startswith(("malleability.reports.audit", "malleability.stats",
                                                   "malleability.empirics", "malleability.theory"))}
            assert not bad, (name, bad)


def test_no_module_is_much_over_400_lines():
    long = {name: n for name, path in _modules().items()
            if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not long, long


def test_the_detector_finds_a_cycle(tmp_path, monkeypatch):
    a, b = tmp_path / "a.py", tmp_path / "b.py"
    a.write_text("from malleability.b import x\n")
    b.write_text("import malleability.a\n")
    modules = {"malleability.a": a, "malleability.b": b}
    assert _imports(a, modules) == {"malleability.b"} and _imports(b, modules) == {"malleability.a"}


_FRESH_IMPORTS = """
import importlib, sys, traceback
failed = []
for name in sys.argv[1:]:
    for loaded in [m for m in sys.modules if m == "malleability" or m.startswith("malleability.")]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except Exception as exc:
        failed.append(f"{name}: {type(exc).__name__}: {exc}")
print("\\n".join(failed))
"""


def test_every_module_imports_first_in_a_fresh_interpreter():
    """The static detector above does not see the implicit import of a package's __init__; a dask worker
    or a user script imports modules in any order, so each must import first, alone."""
    import subprocess
    import sys

    names = sorted(n for n in _modules() if not n.endswith("__main__"))
    run = subprocess.run([sys.executable, "-c", _FRESH_IMPORTS, *names], capture_output=True, text=True,
                         timeout=600, cwd=ROOT.parent)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip() == "", run.stdout
