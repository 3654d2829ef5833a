"""No import cycles in any package of the repository: not at module level, not under
TYPE_CHECKING, not inside functions (a cycle through any of them is still a cycle of meaning)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
PACKAGES = {
    "fleetcore": ROOT / "packages" / "fleetcore" / "src" / "fleetcore",
    "fleetservice": ROOT / "packages" / "fleetservice" / "src" / "fleetservice",
    "fleetdev": ROOT / "packages" / "fleetdev" / "src" / "fleetdev",
    "ingestd": ROOT / "services" / "ingestd" / "src" / "ingestd",
    "pusher": ROOT / "services" / "pusher" / "src" / "pusher",
}


def modules(package: Path) -> dict[str, Path]:
    """Every module of `package` by its dotted name (a package by its own name)."""
    found = {}
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports(path: Path, known: set[str]) -> set[str]:
    """The modules of `known` that `path` imports anywhere in its text."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        found |= {n for n in names if n in known}
    return found


def import_graph(package: Path) -> dict[str, set[str]]:
    """Module → the modules it imports. A package's __init__ importing its own submodules is how
    re-exports work, and `from pkg import sub` names `sub`, not the package: neither is an edge."""
    found = modules(package)
    graph = {name: imports(path, set(found)) - {name} for name, path in found.items()}
    return {
        name: {m for m in deps if not m.startswith(name + ".") and m != package.name}
        for name, deps in graph.items()
    }


def cycles(graph: dict[str, set[str]]) -> list[str]:
    """Every path that leads from a node back to itself, as `a → b → a`."""
    found = []
    for start in graph:
        stack, seen = [(start, [start])], set()
        while stack:
            node, trail = stack.pop()
            for nxt in graph.get(node, set()):
                if nxt == start:
                    found.append(" → ".join([*trail, nxt]))
                elif nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, [*trail, nxt]))
    return found


@pytest.mark.parametrize("name", list(PACKAGES))
def test_no_import_cycles(name: str) -> None:
    """No module of the package imports, directly or through others, a module that imports it."""
    graph = import_graph(PACKAGES[name])
    assert len(graph) > 3  # the walk found the package
    assert cycles(graph) == []
