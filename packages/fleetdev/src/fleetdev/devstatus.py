"""The figures `make dev` prints while it runs, read from both stacks' databases."""

from __future__ import annotations

import time
from typing import Any

import psycopg

from fleetdev.simulator import REPLAYED_ROWS, replay_threshold

__all__ = ["central_storage_found", "format_status", "read_status"]

LOCAL_ROWS = "SELECT count(*), max(received_at) FROM monitoring.power_measurements"
PUSH_STATE = """
SELECT shipped_rows, newest_shipped_received_at, last_error
FROM app.fleet_push_state WHERE resource = 'measurements'"""
CENTRAL_ROWS = "SELECT count(*) FROM fleet.power_measurements"
LAST_BATCH = """
SELECT batch_type, accepted, duplicates, rejected, status, received_at
FROM fleet.ingest_events ORDER BY id DESC LIMIT 1"""
# How ingestd bootstrapped the central table: a partitioned table ('p') is the plain-PostgreSQL
# path; TimescaleDB's hypertable is an ordinary table with the extension present.
CENTRAL_TABLE_KIND = """
SELECT c.relkind::text, EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb')
FROM pg_class c
WHERE c.oid = coalesce(to_regclass('fleet.power_measurements_scaled'), to_regclass('fleet.power_measurements'))"""


def central_storage_found(central_dsn: str) -> str | None:
    """`postgresql` or `timescaledb` for a central database bootstrapped before, else None."""
    with psycopg.connect(central_dsn, connect_timeout=5) as conn:
        row = conn.execute(CENTRAL_TABLE_KIND).fetchone()
    if row is None:
        return None
    return "postgresql" if row[0] == "p" else ("timescaledb" if row[1] else None)


def read_status(customer_dsn: str, central_dsn: str, sim_interval_s: float) -> dict[str, Any]:
    """Both stacks' figures for one status line (`sim_interval_s`: the simulator's interval)."""
    with psycopg.connect(customer_dsn, connect_timeout=3) as conn:
        local_row = conn.execute(LOCAL_ROWS).fetchone()
        replayed = conn.execute(
            REPLAYED_ROWS, {"threshold": replay_threshold(sim_interval_s)}
        ).fetchone()
        shipped = conn.execute(PUSH_STATE).fetchone()
    with psycopg.connect(central_dsn, connect_timeout=3) as conn:
        central_row = conn.execute(CENTRAL_ROWS).fetchone()
        last = conn.execute(LAST_BATCH).fetchone()
    assert local_row is not None and central_row is not None and replayed is not None
    lag = None
    if shipped and shipped[1] and local_row[1]:
        lag = max(0.0, (local_row[1] - shipped[1]).total_seconds())
    return {
        "local_rows": local_row[0],
        "replayed": replayed[0],
        "central_rows": central_row[0],
        "behind": local_row[0] - central_row[0],
        "lag_s": lag,
        "last_batch": last,
        "last_error": shipped[2] if shipped else None,
    }


def format_status(status: dict[str, Any]) -> str:
    last = status["last_batch"]
    last_text = "none yet"
    if last:
        age = time.time() - last[5].timestamp()
        last_text = f"{last[0]} {last[4]} +{last[1]} dup {last[2]} rej {last[3]}, {age:.0f}s ago"
    lag = "n/a" if status["lag_s"] is None else f"{status['lag_s']:.0f}s"
    line = (
        f"local {status['local_rows']:>7} (replayed {status['replayed']:>4}) | "
        f"central {status['central_rows']:>7} | "
        f"to ship {status['behind']:>5} | lag {lag:>5} | last batch: {last_text}"
    )
    if status["last_error"]:
        line += f" | pusher error: {status['last_error']}"
    return line


def format_final(status: dict[str, Any]) -> str:
    """The last line: how much arrived, and that the rest is not lost."""
    local, central = status["local_rows"], status["central_rows"]
    if central >= local:
        return f"stopped; {central} rows arrived centrally of {local} stored locally (all of them)"
    return (
        f"stopped; {central} rows arrived centrally of {local} stored locally; the other "
        f"{local - central} ship on the next `make dev` (the pusher's cursor is kept in the "
        "customer database)"
    )
