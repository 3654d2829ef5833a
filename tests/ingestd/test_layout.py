"""ingestd's structure stays as docs describe it: no import cycles, SQL only under storage/."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from tests.test_import_cycles import cycles, import_graph, modules

SOURCE = Path(__file__).parents[2] / "services" / "ingestd" / "src"
_SQL = re.compile(
    r"^\s*(SELECT|INSERT\s+INTO|UPDATE\s+\S+\s+SET|DELETE\s+FROM|COPY\s|CALL\s|CREATE\s|DROP\s)",
    re.IGNORECASE,
)


def _modules() -> dict[str, Path]:
    return modules(SOURCE / "ingestd")


def test_no_import_cycles() -> None:
    """No ingestd module imports, directly or through others, a module that imports it — imports
    under TYPE_CHECKING and inside functions included (auth ↔ tokencache was one)."""
    graph = import_graph(SOURCE / "ingestd")
    assert len(graph) > 20  # the walk found the package
    assert cycles(graph) == []


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


def test_storage_map_names_every_module() -> None:
    """storage/__init__.py's map names each module of ingestd/storage/ and no module that is
    gone."""
    import ingestd.storage

    doc = ingestd.storage.__doc__ or ""
    named = set(re.findall(r"^(\w+)\.py ", doc, re.MULTILINE))
    present = {p.stem for p in (SOURCE / "ingestd" / "storage").glob("*.py")} - {"__init__"}
    assert named == present


def test_each_sql_statement_once() -> None:
    """No SQL statement is written twice in ingestd (compared with white space folded): a query
    two modules need lives in one and the other imports it."""
    places: dict[str, list[str]] = {}
    for name, path in _modules().items():
        tree = ast.parse(path.read_text())
        parts = {id(v) for n in ast.walk(tree) if isinstance(n, ast.JoinedStr) for v in n.values}
        for node in ast.walk(tree):
            if id(node) in parts:
                continue  # a piece of an f-string, not a statement
            if isinstance(node, ast.JoinedStr):
                text = ast.unparse(node)
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                text = node.value
            else:
                continue
            if _SQL.match(text):
                places.setdefault(" ".join(text.split()), []).append(f"{name}:{node.lineno}")
    assert {sql: where for sql, where in places.items() if len(where) > 1} == {}
    assert len(places) > 50  # the walk found the statements


def test_advisory_lock_keys_differ() -> None:
    """Every deployment-wide turn has its own advisory-lock key (session and transaction locks
    share one key space: a shared key made the fleet-state turn and convert-storage exclude each
    other)."""
    from ingestd.storage import locks

    keys = {name: getattr(locks, name) for name in locks.__all__ if name.endswith("_LOCK")}
    assert len(keys) == 5
    assert len(set(keys.values())) == len(keys)


def test_readme_layout_names_every_module() -> None:
    """README's layout names every subpackage, top-level module and handler module of ingestd,
    so it matches the tree (storage/'s modules are mapped in its own docstring, checked above)."""
    readme = (SOURCE.parents[2] / "README.md").read_text()
    layout = readme[readme.index("## Layout") :]
    part = layout[layout.index("services/ingestd/") : layout.index("services/pusher/")]
    words = set(re.findall(r"\w+/?", part))
    package = SOURCE / "ingestd"
    names = {f"{p.parent.name}/" for p in package.glob("*/__init__.py")} | {
        p.stem
        for p in [*package.glob("*.py"), *package.glob("handlers/*.py")]
        if p.stem not in ("__init__", "__main__")
    }
    assert sorted(names - words) == []
