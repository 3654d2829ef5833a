"""deploy/grafana: the dashboard is well-formed and every query runs on a migrated central database."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from tests.deploy.dockerfile import REPO

DASHBOARD = REPO / "deploy" / "grafana" / "fleet-dashboard.json"


def _dashboard() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return doc


def _queries() -> list[tuple[str, str]]:
    doc = _dashboard()
    found = [(p["title"], t["rawSql"]) for p in doc["panels"] for t in p.get("targets", [])]
    found += [(f"variable {v['name']}", v["query"]) for v in doc["templating"]["list"]
              if v["type"] == "query"]  # fmt: skip
    return found


def _expand_macros(sql: str, start: datetime, end: datetime) -> str:
    """What Grafana's PostgreSQL data source sends for the macros and variables used here."""
    window = f"BETWEEN '{start.isoformat()}' AND '{end.isoformat()}'"
    sql = re.sub(r"\$__timeFilter\(([^)]+)\)", rf"\1 {window}", sql)
    sql = sql.replace("$customer", "'DEV0001', 'DEV0002'")
    assert "$" not in sql, f"unexpanded macro or variable in: {sql}"
    return sql


def test_dashboard_is_well_formed() -> None:
    """Panels have unique ids and grid positions, and every query uses the datasource variable."""
    doc = _dashboard()
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids))
    for panel in doc["panels"]:
        assert {"x", "y", "w", "h"} <= set(panel["gridPos"])
        for target in panel.get("targets", []):
            assert target["datasource"]["uid"] == "${datasource}"
            assert target["datasource"]["type"] == "grafana-postgresql-datasource"
    assert doc["uid"] and doc["title"]


def test_dashboard_covers_what_operators_watch() -> None:
    """There are panels over the hourly aggregate, customer staleness, rejected rows and ingest events."""
    sql = " ".join(q for _, q in _queries())
    for table in (
        "fleet.hourly_per_device",
        "last_seen_at",
        "fleet.rejected_rows",
        "fleet.ingest_events",
    ):
        assert table in sql


@pytest.mark.parametrize("title_sql", _queries(), ids=lambda q: q[0])
def test_query_runs_on_the_central_schema(
    title_sql: tuple[str, str], central_db: str, customer_token: str
) -> None:
    """The panel's SQL, macros expanded as Grafana does, runs on a migrated central database."""
    _, sql = title_sql
    end = datetime.now(UTC)
    with psycopg.connect(central_db) as conn:
        conn.execute("SET statement_timeout = '10s'")
        conn.execute(_expand_macros(sql, end - timedelta(days=1), end)).fetchall()
