"""ingestd's structure stays as docs describe it: no import cycles, SQL only under storage/."""

from __future__ import annotations

import ast
import re
from pathlib import Path

SOURCE = Path(__file__).parents[2] / "services" / "ingestd" / "src"
_SQL = re.compile(
    r"^\s*(SELECT|INSERT\s+INTO|UPDATE\s+\S+\s+SET|DELETE\s+FROM|COPY\s|CALL\s|CREATE\s|DROP\s)",
    re.IGNORECASE,
)


def _modules() -> dict[str, Path]:
    modules = {}
    for path in sorted((SOURCE / "ingestd").rglob("*.py")):
        parts = path.relative_to(SOURCE).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = path
    return modules


def _imports(path: Path, known: set[str]) -> set[str]:
    """The ingestd modules `path` imports at module level (imports inside functions are lazy)."""
    found: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        found |= {n for n in names if n in known}
    return found


def test_no_import_cycles() -> None:
    """No ingestd module imports, directly or through others, a module that imports it."""
    modules = _modules()
    graph = {name: _imports(path, set(modules)) - {name} for name, path in modules.items()}
    # A package's __init__ importing its own submodules is how re-exports work, not a cycle.
    for name in graph:
        graph[name] = {m for m in graph[name] if not m.startswith(name + ".")}
    cycles = []
    for start in graph:
        stack, seen = [(start, [start])], set()
        while stack:
            node, trail = stack.pop()
            for nxt in graph[node]:
                if nxt == start:
                    cycles.append(" → ".join([*trail, nxt]))
                elif nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, [*trail, nxt]))
    assert cycles == []


def test_sql_lives_under_storage() -> None:
    """Only modules under ingestd/storage/ hold SQL statements (handlers, the use case, the
    housekeeping loop and the CLI call storage functions)."""
    offenders = []
    for name, path in _modules().items():
        if name.startswith("ingestd.storage"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            is_text = isinstance(node, ast.Constant) and isinstance(node.value, str)
            if is_text and _SQL.match(node.value):
                offenders.append(f"{name}:{node.lineno}: {node.value.strip()[:60]}")
    assert offenders == []
    assert len(_modules()) > 20  # the walk found the package
