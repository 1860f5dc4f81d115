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
    """Imports of a module listed at or above the importer (a folder's ``.*`` entry ranks
    every module in it, so two extensions in one folder may not import each other)."""
    rank = {name: llmtrsr_utils.module_rank(name, order) for name in graph}
    rank.update({target: llmtrsr_utils.module_rank(target, order)
                 for targets in graph.values() for target in targets})
    return [f"{name} imports {target} (listed above it)"
            for name, targets in sorted(graph.items()) for target in sorted(targets)
            if rank[target] >= rank[name]]


def test_every_module_has_a_place_in_the_line():
    files = set(module_files())
    order = llmtrsr_utils.MODULE_ORDER
    assert len(order) == len(set(order)), "a module is listed twice in MODULE_ORDER"
    unplaced = {name for name in files if llmtrsr_utils.module_rank(name) is None}
    assert unplaced == set(), "add these modules to llmtrsr_utils.MODULE_ORDER"
    assert {n for n in order if not n.endswith(".*")} - files == set(), \
        "MODULE_ORDER lists modules that do not exist"
    assert {n.removesuffix(".*") for n in order if n.endswith(".*")} <= files, \
        "MODULE_ORDER lists an extension folder that is not a package"


def test_a_file_dropped_into_an_extension_folder_has_its_place():
    """A new loader or extension file needs no MODULE_ORDER edit (the recipes allow it)."""
    assert llmtrsr_utils.module_rank("datasets.loaders.my_toy") == \
        llmtrsr_utils.MODULE_ORDER.index("datasets.loaders.*")
    assert llmtrsr_utils.module_rank("extensions.my_toy") == \
        llmtrsr_utils.MODULE_ORDER.index("extensions.*")
    assert llmtrsr_utils.module_rank("my_toy") is None


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
    assert upward_imports({"x.p": {"a"}, "x.q": {"x.p"}, "a": set()}, ("a", "x.*")) == [
        "x.q imports x.p (listed above it)"]


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


def calls_of(path: Path, function: str) -> list[tuple[str, int]]:
    """(enclosing function, line) of every call of ``function`` (a name or an attribute)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for outer in ast.walk(tree):
        if not isinstance(outer, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for node in ast.walk(outer):
            if isinstance(node, ast.Call) and (
                    getattr(node.func, "id", None) == function
                    or getattr(node.func, "attr", None) == function):
                found.append((outer.name, node.lineno))
    tree_calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and (
        getattr(n.func, "id", None) == function or getattr(n.func, "attr", None) == function)]
    assert len(tree_calls) == len(found), f"{path}: {function} called outside a function"
    return found


def test_only_ensure_splits_builds_the_data():
    """The data rule: no stage runs the data stage; each reads the prepared splits
    (``splits.prepared_dir``, which raises DataMissingError naming the command) and only
    ``pipeline.ensure_splits`` calls ``prepare_dataset`` (the notebooks too)."""
    callers = {f"{name}.{function}" for name, path in module_files().items()
               for function, _ in calls_of(path, "prepare_dataset")}
    callers.discard("datasets.splits.prepare_dataset")  # its own lock-and-retry wrapper
    assert callers == {"pipeline.ensure_splits"}
    notebooks = sorted((PACKAGE.parent / "notebooks").glob("*.py"))
    assert notebooks and not [p.name for p in notebooks if "prepare_dataset(" in p.read_text()]


def test_the_data_rule_check_sees_a_call(tmp_path):
    source = tmp_path / "x.py"
    source.write_text("def stage(cfg):\n    return splits.prepare_dataset(cfg)\n")
    assert calls_of(source, "prepare_dataset") == [("stage", 2)]
