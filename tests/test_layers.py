"""The architecture, checked from the source: layers point down, privates stay private, no import cycles.

Every ``.py`` file of the repository is parsed (``ast``, nothing is imported or executed) and each
import becomes an edge ``importer -> module``. Besides ``import`` statements, the two ways this
code base names a module in a string count too: ``importlib.import_module("a.b")`` and a
``"-m", "a.b"`` pair in a command line.

- Layers: ``integration`` <- ``actions`` <- ``workers``. ``integration`` imports neither of the
  others and ``actions`` does not import ``workers``, even for type checking only.
- Privacy: a module or name whose own name starts with one underscore (``actions._coerce``,
  ``from actions import _simulator``) belongs to its top-level package; nothing outside that package
  (other packages, ``tests/``, ``bench/``) imports it.
- Cycles inside ``workers/``: none between module-level imports. An import inside a function that
  only hides a cycle at run time is still a dependency, so the second test counts those too; the
  cycles it still finds are listed in ``KNOWN_LAZY_CYCLES`` with the reason, and that list must
  shrink, never grow: a listed cycle that no longer exists fails the test until it is removed.
  Imports under ``if TYPE_CHECKING:`` are not edges for cycles (they never run).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("integration", "actions", "workers")
#: Which packages each layer may import (itself always).
ALLOWED_LAYERS: dict[str, set[str]] = {
    "integration": set(),
    "actions": {"integration"},
    "workers": {"integration", "actions"},
}
SKIPPED_DIRS = {".venv", "venv", "build", "dist", "node_modules", "__pycache__"}

#: Cycles that exist only through function-local imports, each with why it is still there. Empty is
#: the goal; an entry is a set of the modules in one strongly connected component.
KNOWN_LAZY_CYCLES: dict[frozenset[str], str] = {
}


@dataclass(frozen=True)
class Edge:
    """One import: ``importer`` names ``target`` (a module, or the package it was imported from)."""

    importer: str
    target: str
    names: tuple[str, ...]
    file: str
    line: int
    top_level: bool
    type_checking: bool

    def where(self) -> str:
        return f"{self.file}:{self.line}"


def _python_files() -> Iterator[Path]:
    for path in sorted(REPO_ROOT.rglob("*.py")):
        parts = path.relative_to(REPO_ROOT).parts
        if any(part in SKIPPED_DIRS or part.startswith(".") or part.endswith(".egg-info") for part in parts[:-1]):
            continue
        yield path


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO_ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@cache
def _known_modules() -> frozenset[str]:
    return frozenset(_module_name(path) for path in _python_files())


def _resolve(name: str) -> str:
    """The longest prefix of ``name`` that is a module of this repository (``name`` if none is)."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in _known_modules():
            return candidate
    return name


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


class _ImportCollector(ast.NodeVisitor):
    """Collects every import of one file, knowing whether it runs at import time or under TYPE_CHECKING."""

    def __init__(self, module: str, file: str, is_package: bool) -> None:
        self.module = module
        self.file = file
        self.package = module if is_package else module.rpartition(".")[0]
        self.edges: list[Edge] = []
        self._function_depth = 0
        self._type_checking_depth = 0

    def _add(self, target: str, names: tuple[str, ...], node: ast.AST) -> None:
        self.edges.append(Edge(self.module, target, names, self.file, getattr(node, "lineno", 0),
                               self._function_depth == 0, self._type_checking_depth > 0))

    def _function(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) -> None:
        self._function_depth += 1
        self.generic_visit(node)
        self._function_depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _function  # noqa: N815

    def visit_If(self, node: ast.If) -> None:
        if _is_type_checking(node.test):
            self._type_checking_depth += 1
            for child in node.body:
                self.visit(child)
            self._type_checking_depth -= 1
            for child in node.orelse:
                self.visit(child)
        else:
            self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name, (), node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            base_parts = self.package.split(".") if self.package else []
            base_parts = base_parts[: len(base_parts) - (node.level - 1)] if node.level > 1 else base_parts
            base = ".".join([*base_parts, *([node.module] if node.module else [])])
        else:
            base = node.module or ""
        # ``from pkg import mod`` imports the module; ``from mod import name`` imports names from mod.
        names = [alias.name for alias in node.names]
        for name in names:
            if f"{base}.{name}" in _known_modules():
                self._add(f"{base}.{name}", (), node)
        plain = tuple(name for name in names if f"{base}.{name}" not in _known_modules())
        if plain:
            self._add(base, plain, node)

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        first = node.args[0] if node.args else None
        if called == "import_module" and isinstance(first, ast.Constant) and isinstance(first.value, str):
            self._add(first.value, (), node)
        self.generic_visit(node)

    def _command_line(self, node: ast.List | ast.Tuple) -> None:
        values = [e.value if isinstance(e, ast.Constant) else None for e in node.elts]
        for index, value in enumerate(values[:-1]):
            following = values[index + 1]
            if value == "-m" and isinstance(following, str):
                self._add(following, (), node)
        self.generic_visit(node)

    visit_List = visit_Tuple = _command_line  # noqa: N815


@cache
def _edges() -> tuple[Edge, ...]:
    found: list[Edge] = []
    for path in _python_files():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        collector = _ImportCollector(_module_name(path), str(path.relative_to(REPO_ROOT)),
                                     path.name == "__init__.py")
        collector.visit(tree)
        found.extend(collector.edges)
    return tuple(found)


def _top(module: str) -> str:
    return module.split(".", 1)[0]


def _private_part(edge: Edge) -> str | None:
    """The first private component the import reaches (a module path part or an imported name)."""
    for part in [*edge.target.split(".")[1:], *edge.names]:
        if part.startswith("_") and not (part.startswith("__") and part.endswith("__")):
            return part
    return None


def test_the_scan_sees_the_code_base() -> None:
    """Guards the guards: the scan finds the packages and the kinds of import the rules below rely on."""
    edges = _edges()
    importers = {_top(e.importer) for e in edges}
    assert set(PACKAGES) | {"tests"} <= importers
    assert any(e.importer.startswith("workers.") and _top(e.target) == "actions" for e in edges)
    assert any(not e.top_level for e in edges), "function-local imports are collected"
    assert any(e.type_checking for e in edges), "imports under TYPE_CHECKING are recognised"


def test_layers_point_down() -> None:
    """integration <- actions <- workers: no package imports a layer above it."""
    wrong = [f"{e.where()}: {e.importer} imports {e.target}" for e in _edges()
             if _top(e.importer) in PACKAGES and _top(e.target) in PACKAGES
             and _top(e.target) != _top(e.importer) and _top(e.target) not in ALLOWED_LAYERS[_top(e.importer)]]
    assert not wrong, "imports against the layer direction:\n" + "\n".join(wrong)


def test_no_private_imports_across_packages() -> None:
    """Nothing outside a package imports its ``_private`` modules or names; the package offers a public surface."""
    wrong = []
    for edge in _edges():
        if _top(edge.target) not in PACKAGES or _top(edge.importer) == _top(edge.target):
            continue
        private = _private_part(edge)
        if private:
            what = edge.target if private in edge.target.split(".") else f"{private} from {edge.target}"
            wrong.append(f"{edge.where()}: {edge.importer} imports {what}")
    assert not wrong, "private imports across packages:\n" + "\n".join(wrong)


def _cycles(edges: list[Edge]) -> list[frozenset[str]]:
    """Strongly connected components with more than one module, or a module importing itself (Tarjan)."""
    graph: dict[str, set[str]] = {}
    for edge in edges:
        graph.setdefault(edge.importer, set()).add(edge.target)
        graph.setdefault(edge.target, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[frozenset[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in sorted(graph[node]):
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph[node]:
                found.append(frozenset(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def _workers_edges(*, top_level_only: bool) -> list[Edge]:
    return [Edge(e.importer, _resolve(e.target), e.names, e.file, e.line, e.top_level, e.type_checking)
            for e in _edges()
            if _top(e.importer) == "workers" and _top(e.target) == "workers" and not e.type_checking
            and (e.top_level or not top_level_only)]


def _describe(cycle: frozenset[str], edges: list[Edge]) -> str:
    inside = [f"    {e.importer} -> {e.target} ({e.where()}{'' if e.top_level else ', in a function'})"
              for e in edges if e.importer in cycle and e.target in cycle]
    return f"  {sorted(cycle)}:\n" + "\n".join(sorted(set(inside)))


def test_no_import_cycles_between_module_level_imports_in_workers() -> None:
    edges = _workers_edges(top_level_only=True)
    cycles = _cycles(edges)
    assert not cycles, "import cycles in workers/:\n" + "\n".join(_describe(c, edges) for c in cycles)


def test_no_new_import_cycles_hidden_in_functions_in_workers() -> None:
    """A function-local import still makes two modules depend on each other; only the listed ones remain."""
    edges = _workers_edges(top_level_only=False)
    cycles = set(_cycles(edges))
    new = [c for c in cycles if c not in KNOWN_LAZY_CYCLES]
    gone = [c for c in KNOWN_LAZY_CYCLES if c not in cycles]
    assert not new, "import cycles in workers/ (counting imports inside functions):\n" + "\n".join(
        _describe(c, edges) for c in new)
    assert not gone, f"these cycles are gone: remove them from KNOWN_LAZY_CYCLES: {[sorted(c) for c in gone]}"


@pytest.mark.parametrize("rule", ["layers", "private", "cycle"])
def test_the_rules_catch_what_they_forbid(rule: str) -> None:
    """Each rule flags a hand-made violation, so a passing run means the code is clean, not the check blind."""
    if rule == "layers":
        edge = Edge("integration.client", "workers.app", (), "x.py", 1, True, False)
        assert _top(edge.target) not in ALLOWED_LAYERS[_top(edge.importer)]
    elif rule == "private":
        assert _private_part(Edge("tests.x", "actions", ("_simulator",), "x.py", 1, True, False)) == "_simulator"
        assert _private_part(Edge("workers.x", "actions._coerce", ("coerce",), "x.py", 1, True, False)) == "_coerce"
        assert _private_part(Edge("workers.x", "actions", ("registry",), "x.py", 1, True, False)) is None
    else:
        loop = [Edge("workers.a", "workers.b", (), "a.py", 1, True, False),
                Edge("workers.b", "workers.c", (), "b.py", 1, False, False),
                Edge("workers.c", "workers.a", (), "c.py", 1, True, False),
                Edge("workers.c", "workers.d", (), "c.py", 2, True, False)]
        assert _cycles(loop) == [frozenset({"workers.a", "workers.b", "workers.c"})]
