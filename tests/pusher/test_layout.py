"""The pusher's structure stays as README's layout describes it: subpackages by role layered one
way (no module cycles either: tests/test_import_cycles.py), SQL only where the customer database
is read or the push state kept, the cursor written once."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from tests.test_import_cycles import cycles, import_graph, modules

ROOT = Path(__file__).parents[2]
SOURCE = ROOT / "services" / "pusher" / "src"
_SQL = re.compile(
    r"^\s*(WITH\s|SELECT\s|INSERT\s+INTO|UPDATE\s+\S+\s+SET|DELETE\s+FROM|COPY\s|CREATE\s|DROP\s)"
)  # upper case, as the pusher writes SQL (a docstring may start with "Drop")
ROLES = ("source", "state", "delivery", "ops")
"""The subpackages, each one role; the top-level modules (daemon, cli, settings, errors, retry,
outcomes, readahead, migrate) orchestrate them."""


def _modules() -> dict[str, Path]:
    return modules(SOURCE / "pusher")


def _graph() -> dict[str, set[str]]:
    return import_graph(SOURCE / "pusher")


def _role(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 and parts[1] in ROLES else module


def test_roles_are_layered() -> None:
    """The role subpackages depend on each other one way only (e.g. delivery never reads the
    source, the source never keeps state), so each can be read without the ones above it."""
    roles: dict[str, set[str]] = {}
    for module, deps in _graph().items():
        if _role(module) in ROLES:
            roles.setdefault(_role(module), set()).update(
                _role(d) for d in deps if _role(d) in ROLES and _role(d) != _role(module)
            )
    assert set(roles) == set(ROLES)
    assert cycles(roles) == []


def test_sql_lives_with_the_source_and_the_state() -> None:
    """Only modules under pusher/source/ and pusher/state/ hold SQL statements (the daemon,
    outcomes, operations and the CLI call their functions)."""
    offenders = []
    for name, path in _modules().items():
        if name.startswith(("pusher.source", "pusher.state")):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            is_text = isinstance(node, ast.Constant) and isinstance(node.value, str)
            if is_text and _SQL.match(node.value):
                offenders.append(f"{name}:{node.lineno}: {node.value.strip()[:60]}")
    assert offenders == []


def test_readme_layout_names_every_role() -> None:
    """README's layout names every subpackage of the pusher and every top-level module, so it
    matches the tree."""
    readme = (ROOT / "README.md").read_text()
    layout = readme[readme.index("## Layout") :]
    layout = layout[: layout.index("services/*/src/*/migrations/")]
    pusher_part = layout[layout.index("services/pusher/") :]
    top_level = {
        path.stem
        for path in (SOURCE / "pusher").glob("*.py")
        if path.stem not in ("__init__", "__main__")
    }
    packages = {path.parent.name for path in (SOURCE / "pusher").glob("*/__init__.py")}
    missing = [
        name
        for name in (*(f"{package}/" for package in sorted(packages)), *sorted(top_level))
        if name not in pusher_part
    ]
    assert missing == []


_CURSOR_TEXT = re.compile(
    r"\(\w+\.push_xid, \w+\.device_id, \w+\.time\)"  # the row key
    r"|\w+\.push_xid(?: DESC)?, \w+\.device_id(?: DESC)?, \w+\.time"  # the cursor's order
    r"|%\(\w*xid\)s::xid8, %\(\w*device_id\)s"  # the cursor's parameters
    r"|pg_snapshot_xmin\(pg_current_snapshot\(\)\)\)\s*$"  # the horizon test
    r"|\"time\", \"device_id\", \"received_at\""  # the item columns
)


def test_cursor_is_written_once() -> None:
    """The cursor's key, order, parameters, horizon test and item columns are spelled only in
    pusher/source/cursor.py; every reader (JSON and columnar batches, backlog, shippable count,
    quarantine of passed rows) builds its SQL from it."""
    offenders = []
    for name, path in _modules().items():
        if name == "pusher.source.cursor":
            continue
        for lineno, line in enumerate(path.read_text().splitlines(), 1):
            if _CURSOR_TEXT.search(line):
                offenders.append(f"{name}:{lineno}: {line.strip()}")
    assert offenders == []
