"""The package's import graph: every module of OpportunisticBMDLib parsed (imports at any depth, function-level
ones included, relative ones resolved) and no cycle allowed; settings.py stays a leaf."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGE = "OpportunisticBMDLib"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE


def _module_name(path: Path) -> str:
    parts = [PACKAGE, *path.relative_to(ROOT).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(ROOT.rglob("*.py")) if "__pycache__" not in p.parts}


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The module ``name`` names in the package (``pkg.mod.attr`` -> ``pkg.mod``), None outside it."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join(anchor + ([node.module] if node.module else []))
                # "from . import x" / "from .pkg import mod": each name may be a module itself
                targets = [f"{base}.{alias.name}" for alias in node.names] or [base]
            for target in targets:
                if not target.startswith(PACKAGE):
                    continue
                resolved = _resolve(target, modules)
                if resolved and resolved != name:
                    edges.add(resolved)
        graph[name] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        state[node] = 2
        path.pop()
        return None

    for start in sorted(graph):
        if start not in state:
            found = visit(start)
            if found:
                return found
    return None


def test_no_import_cycle() -> None:
    """A module importing its own parent package counts too: Python would run that package half-initialised."""
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_walker_finds_relative_and_function_level_imports() -> None:
    graph = import_graph()
    assert f"{PACKAGE}.calibration.registry" in graph[f"{PACKAGE}.calibration.muscle_fat"]  # from .registry import
    assert f"{PACKAGE}.settings" in graph[f"{PACKAGE}.pipeline"]  # from .settings import
    assert f"{PACKAGE}.models.inference" in graph[f"{PACKAGE}.pipeline"]  # inside _segment()
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_settings_is_a_leaf() -> None:
    """The typed settings import nothing of the package but errors and header (every layer imports them)."""
    deps = import_graph()[f"{PACKAGE}.settings"]
    assert deps <= {f"{PACKAGE}.errors", f"{PACKAGE}.header"}, deps


def test_standard_library_imports_are_at_module_top():
    """Heavy third-party imports may wait inside a function (``obmd --help`` stays fast), the standard library
    not: it costs nothing and a reader sees a module's needs at its top. Platform-only modules imported under
    ``try: ... except ImportError`` are the exception."""
    found = []
    for name, path in _modules().items():
        tree = ast.parse(path.read_text(), str(path))
        guarded = {id(n) for t in ast.walk(tree) if isinstance(t, ast.Try)
                   and any(isinstance(h.type, ast.Name) and h.type.id == "ImportError" for h in t.handlers)
                   for n in ast.walk(t)}
        for func in ast.walk(tree):
            if not isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(func):
                modules = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                           [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module
                           else [])
                if id(node) not in guarded and any(m.split(".")[0] in sys.stdlib_module_names for m in modules):
                    found.append(f"{name}:{node.lineno} {', '.join(modules)}")
    assert not found, "standard-library imports inside functions:\n" + "\n".join(found)
