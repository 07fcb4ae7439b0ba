"""The arrows of docs/design.md: cil never imports ray; analysis never imports torch or ray; and no
import circle anywhere in the packages."""

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("cil", "tune", "analysis")


@pytest.mark.parametrize("modules, forbidden", [
    ("cil, cil.loop, cil.cli, cil.bench, cil.losses", ("ray",)),
    ("analysis, analysis.cli, analysis.figures, analysis.synth, analysis.bench, cil.results_schema", ("torch", "ray")),
    ("cil.config, cil.approaches, cil.approaches.registry", ("torch", "ray")),  # the config is torch-free
])
def test_imports_respect_the_layers(modules, forbidden):
    code = (f"import sys\nimport {modules}\n"
            f"print(','.join(m for m in {forbidden!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"{modules} imported {out.stdout.strip()}"


def test_cil_run_stays_the_function_after_the_loop_module_is_imported() -> None:
    """The loop lives in cil.loop, so importing it never replaces the public ``cil.run`` function."""
    code = "import cil.loop, cil.cli, inspect; from cil import run; assert inspect.isgeneratorfunction(run), run"
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root)


def module_names() -> dict[str, Path]:
    """Every module of the packages by dotted name (a package by its own name)."""
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def import_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports anywhere: at the top, inside functions (a lazy import
    defers a circle, it does not remove it) and under ``TYPE_CHECKING``."""
    modules = module_names()

    def owner(name: str) -> str | None:  # the module a dotted name lives in (``cil.data.X`` -> ``cil.data``)
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*up, base] if base else up)
                targets.add(base)
                targets.update(f"{base}.{alias.name}" for alias in node.names)
        graph[name] = {o for t in targets if t.split(".")[0] in PACKAGES and (o := owner(t)) not in (None, name)}
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def test_the_circle_finder_finds_a_circle_through_three_modules() -> None:
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert circles({"a": {"b"}, "b": set()}) == []


def test_no_import_circle() -> None:
    graph = import_graph()
    assert {"cil.loop", "tune.sweep", "analysis.load"} <= set(graph)  # the walk sees the packages
    found = circles(graph)
    assert not found, "import circles (a module reaches itself through these): " + "; ".join(
        " <-> ".join(c) for c in found)
