"""The package's shape: a straight line of modules (no cycle, no upward import, inside
functions too), and registries that load without torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import llmtrsr_utils

PACKAGE = Path(llmtrsr_utils.__file__).resolve().parent


def module_files() -> dict[str, Path]:
    """Every module of the package by its name relative to the package ("" for itself)."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def package_imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The package modules ``path`` imports anywhere in its body (functions included)."""
    is_package = path.name == "__init__.py"
    here = ["llmtrsr_utils", *(name.split(".") if name else [])]
    if not is_package:
        here = here[:-1]
    out: set[str] = set()

    def add(dotted: str) -> None:
        if dotted == "llmtrsr_utils" or dotted.startswith("llmtrsr_utils."):
            out.add(dotted.removeprefix("llmtrsr_utils").removeprefix("."))

    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(here[:len(here) - node.level + 1] + ([base] if base else []))
            if not (base == "llmtrsr_utils" or base.startswith("llmtrsr_utils.")):
                continue
            for alias in node.names:  # `from pkg import module` imports that module
                candidate = f"{base}.{alias.name}".removeprefix("llmtrsr_utils.")
                add(f"llmtrsr_utils.{candidate}" if candidate in known else base)
    out.discard(name)
    return out


def import_graph() -> dict[str, set[str]]:
    files = module_files()
    return {name: package_imports(name, path, set(files)) for name, path in files.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (first repeated last), or None."""
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for child in sorted(graph.get(node, ())):
            if state.get(child) == 1:
                return stack[stack.index(child):] + [child]
            if child not in state and (cycle := visit(child)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def upward_imports(graph: dict[str, set[str]], order: tuple[str, ...]) -> list[str]:
    rank = {name: i for i, name in enumerate(order)}
    return [f"{name} imports {target} (listed above it)"
            for name, targets in sorted(graph.items()) for target in sorted(targets)
            if rank[target] >= rank[name]]


def test_every_module_has_a_place_in_the_line():
    files = set(module_files())
    order = llmtrsr_utils.MODULE_ORDER
    assert len(order) == len(set(order)), "a module is listed twice in MODULE_ORDER"
    assert files - set(order) == set(), "add these modules to llmtrsr_utils.MODULE_ORDER"
    assert set(order) - files == set(), "MODULE_ORDER lists modules that do not exist"


def test_imports_only_go_down_the_line_and_form_no_cycle():
    graph = import_graph()
    assert graph["pipeline"] >= {"summarize", "recommend", "evaluate"}  # the walk sees imports
    assert "pipeline" in graph["grid"]  # ... inside functions too
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])
    assert upward_imports(graph, llmtrsr_utils.MODULE_ORDER) == []


def test_the_checks_catch_a_cycle_and_an_upward_import():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert upward_imports({"a": set(), "b": {"a"}, "c": {"b", "d"}, "d": set()},
                          ("a", "b", "c", "d")) == ["c imports d (listed above it)"]


def test_the_walk_resolves_function_level_and_relative_imports(tmp_path):
    source = tmp_path / "x.py"
    source.write_text("def f():\n    from llmtrsr_utils import recommend\n"
                      "    from .datasets.base import USER_ID\n    import llmtrsr_utils.config\n")
    known = set(module_files())
    assert package_imports("summarize", source, known) == {"recommend", "datasets.base",
                                                           "config"}


@pytest.mark.parametrize("module", ["registry", "datasets", "config", "results", "plots"])
def test_registries_config_and_reporting_load_without_torch(module):
    code = (f"import sys, llmtrsr_utils.{module}; "
            "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert done.stdout.strip() == "[]"
