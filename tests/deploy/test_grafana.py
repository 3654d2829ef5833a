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
    sql = sql.replace("$__timeFrom()", f"'{start.isoformat()}'")
    sql = sql.replace("$__timeTo()", f"'{end.isoformat()}'")
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
    """There are panels over the hourly aggregate, customer staleness, rejected rows, ingest events,
    energy per day per device, coverage per device, stale devices, gateways by state, worst lag,
    versions, disk headroom, meter states, and energy and peak demand per site."""
    sql = " ".join(q for _, q in _queries())
    for table in (
        "fleet.hourly_per_device",
        "last_seen_at",
        "fleet.rejected_rows",
        "fleet.ingest_events",
        "fleet.daily_energy",
        "fleet.device_completeness",
        "now() - INTERVAL '15 minutes'",
        "fleet.gateways",
        "max(g.lag_s)",
        "g.version",
        "g.disk_free_bytes",
        "fleet.device_states",
        "fleet.devices_energy",
        "fleet.demand_intervals",
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


def test_energy_panels_answer_on_data(central_db: str, customer_token: str) -> None:
    """With a device sampling every 15 minutes at 4 kW, the daily-energy panel shows its kWh per
    local day (a site with an unknown time zone falls back to UTC), the coverage panel its ratio."""
    panels = {title: sql for title, sql in _queries()}
    daily = next(sql for title, sql in panels.items() if title.startswith("Energy per day"))
    coverage = next(sql for title, sql in panels.items() if title.startswith("Coverage"))
    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    start = end - timedelta(hours=6)
    with psycopg.connect(central_db) as conn:
        (cid,) = conn.execute(
            "SELECT id FROM fleet.customers WHERE code = 'DEV0001'"
        ).fetchone() or (0,)
        conn.execute(
            """INSERT INTO fleet.sites (customer_id, id, name, timezone, updated_at)
               VALUES (%s, 1, 'Plant', 'Not/AZone', now())""",
            (cid,),
        )
        conn.execute(
            """INSERT INTO fleet.devices (customer_id, id, site_id, serial_number, model, updated_at)
               VALUES (%s, 7, 1, 'S7', 'M', now())""",
            (cid,),
        )
        conn.execute(
            """INSERT INTO fleet.power_measurements (time, customer_id, device_id, received_at, energy_imp_kwh)
               SELECT t, %s, 7, now(), 4 * extract(epoch FROM t - %s) / 3600
               FROM generate_series(%s::timestamptz, %s, INTERVAL '15 minutes') AS t""",
            (cid, start, start, end),
        )
        conn.execute(
            """INSERT INTO fleet.hourly_dirty (customer_id, device_id, bucket)
               SELECT DISTINCT customer_id, device_id, date_bin('1 hour', time, '2000-01-01')
               FROM fleet.power_measurements ON CONFLICT DO NOTHING"""
        )
        days = conn.execute(_expand_macros(daily, start - timedelta(days=1), end)).fetchall()
        rows = conn.execute(_expand_macros(coverage, start, end)).fetchall()
    assert sum(r[2] for r in days) == pytest.approx(24.0)
    assert {r[1] for r in days} == {"DEV0001 / 7"}
    (row,) = rows
    assert (row[1], row[3], row[4]) == (7, 900.0, 24)  # the sample at `end` is outside


def test_fleet_panels_answer_on_data(central_db: str, customer_token: str) -> None:
    """With one blocked gateway reporting and a frozen meter, the gateways-by-state panel counts
    it as blocked, the not-ok table lists it, and the meters-by-state panel counts the meter."""
    panels = {title: sql for title, sql in _queries()}
    end = datetime.now(UTC)
    with psycopg.connect(central_db) as conn:
        conn.execute(
            """INSERT INTO fleet.gateways (token_hash, customer_id, version, wire_format, report,
                                          states, blocking_age_s, lag_s)
               SELECT t.token_hash, t.customer_id, '1.0.0', 'columnar', '{}', '{blocked}', 900, 5
               FROM fleet.customer_tokens t"""
        )
        conn.execute(
            """INSERT INTO fleet.device_states (customer_id, device_id, state)
               SELECT id, 7, 'frozen' FROM fleet.customers WHERE code = 'DEV0001'"""
        )
        run = {
            title: conn.execute(_expand_macros(panels[title], end - timedelta(hours=1), end)).fetchall()
            for title in ("Gateways by state", "Gateways not ok (latest report)", "Meters by state",
                          "Worst lag (s)", "Pusher versions in the fleet")
        }  # fmt: skip
    assert run["Gateways by state"] == [("blocked", 1)]
    assert run["Gateways not ok (latest report)"][0][2] == "blocked"
    assert run["Meters by state"] == [("frozen", 1)]
    assert run["Worst lag (s)"] == [(5.0,)]
    assert run["Pusher versions in the fleet"] == [("1.0.0", 1)]
