"""The shape of the package (STYLE.md): imports point down the pipeline, no cycles, small modules.

Imports are read from the source (every ``import`` statement, the lazy ones inside functions
too), so a cycle hidden behind a function-level import is caught as well.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "mlinguality"
MAX_LINES = 500
# The pipeline, bottom to top: a module may import its own layer and the layers before it.
LAYERS = [
    {"types", "errors", "files", "choices", "sections", "fingerprint", "gemma", "tiny"}
    | {"families", "model"},
    {"corpus"},
    {"activations"},
    {"selectivity"},
    {"ablation"},
    {"steering"},
    {"dashboards"},
    {"lenses"},
    {"run"},
    {"cli", "__main__"},
]


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every mlinguality module ``path`` imports (a ``from a import b`` names ``a.b`` if that is
    a module, else ``a``)."""
    found: set[str] = set()
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("mlinguality")}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("mlinguality"):
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                found.add(full if full in MODULES else node.module)
    return {name for name in found if name in MODULES}


MODULES = {_module_name(path): path for path in PACKAGE.rglob("*.py")}
GRAPH = {name: _imports(path) for name, path in MODULES.items()}


def _layer(module: str) -> int:
    top = module.split(".")[1] if module.count(".") else "__init__"
    for index, names in enumerate(LAYERS):
        if top in names:
            return index
    return -1  # the package's __init__: re-exports only


def _cycle() -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for child in sorted(GRAPH[node]):
            if state.get(child) == 1:
                return stack[stack.index(child) :] + [child]
            if child not in state and (found := visit(child)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(GRAPH):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_import_graph_is_read():
    """The oracle itself: known edges are found (a parser that saw nothing would pass below)."""
    assert "mlinguality.run.runner" in GRAPH["mlinguality.cli.run"]
    assert "mlinguality.run.stages" in GRAPH["mlinguality.run.runner"]


def test_no_import_cycle_inside_the_package():
    assert _cycle() is None, " -> ".join(_cycle() or [])


def test_imports_point_down_the_pipeline():
    upward = [
        f"{module} imports {target}"
        for module, targets in GRAPH.items()
        for target in targets
        if _layer(module) >= 0 and _layer(target) > _layer(module)
    ]
    assert upward == []


def test_nothing_imports_the_cli():
    users = [
        module
        for module, targets in GRAPH.items()
        if not module.startswith(("mlinguality.cli", "mlinguality.__main__"))
        and any(t.startswith("mlinguality.cli") for t in targets)
    ]
    assert users == []


@pytest.mark.parametrize("module", sorted(MODULES))
def test_modules_stay_small(module):
    lines = len(MODULES[module].read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{module}: {lines} lines (limit {MAX_LINES}); split it by concern"
