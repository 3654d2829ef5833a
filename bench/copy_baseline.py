"""The baseline of `bench/ingest.py`: the same rows by binary COPY, straight into a table like the
central one.

`bench_copy` is a `LIKE fleet.power_measurements_scaled INCLUDING ALL` table, partitioned by week
like the central one (same weeks, made up front for both), written in the layout ingestd writes
(`stored_rows`: each value as its integer steps, or as the double sent when it is not a whole
number of them, the other column null), one transaction per batch (`copy_batches`, psycopg's
`write_row` of pre-built tuples): the machine's limit for these rows from Python.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import psycopg
from fleetcore import MEASUREMENT_VALUE_FIELDS
from fleetcore.resolution import RESOLUTIONS, scaled_or_none
from ingestd.storage.copybuffer import COPY_COLUMNS as STORED_COLUMNS
from psycopg import sql
from rows import MeasurementTuple

__all__ = [
    "COPY_TABLE",
    "STORED_TYPES",
    "copy_batches",
    "create_baseline_table",
    "reset_tables",
    "stored_rows",
]

COPY_TABLE = "bench_copy"

CREATE_COPY_TABLE = (
    f"CREATE TABLE {COPY_TABLE} (LIKE fleet.power_measurements_scaled INCLUDING ALL)"
)
RESET_TABLES = f"TRUNCATE {COPY_TABLE}, fleet.power_measurements_scaled"
COPY_STATEMENT = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
    sql.Identifier(COPY_TABLE), sql.SQL(", ").join(sql.Identifier(c) for c in STORED_COLUMNS)
)
_STORAGE_TYPES = {"integer": "int4", "bigint": "int8"}
STORED_TYPES: tuple[str, ...] = (
    "timestamptz",
    "int8",
    "timestamptz",
    *(_STORAGE_TYPES[RESOLUTIONS[f].storage_type] for f in MEASUREMENT_VALUE_FIELDS),
    *("float8",) * len(MEASUREMENT_VALUE_FIELDS),
    "int8",
)
"""The types of `STORED_COLUMNS`: ingestd's COPY columns, in its order."""


def reset_tables(admin: psycopg.Connection[Any]) -> None:
    """Empty both tables. ingestd's housekeeping may be packing a closed week's index (`REINDEX
    INDEX CONCURRENTLY`, which waits for older transactions) as the TRUNCATE asks for its lock:
    PostgreSQL then ends the TRUNCATE as a deadlock, and it is tried again (up to 5 times)."""
    for attempt in range(5):
        try:
            admin.execute(RESET_TABLES)
            break
        except psycopg.errors.DeadlockDetected:
            if attempt == 4:
                raise
            time.sleep(1.0)
    admin.execute("CHECKPOINT")


def create_baseline_table(dsn: str, times: Sequence[Any]) -> None:
    """The baseline table is identical to the central one: partitioned by week like it (as
    `ingestd migrate` leaves it without TimescaleDB), with the same keys. Both get the weeks of
    the rows made up front, so neither run pays for creating a partition while timed."""
    import asyncio

    from ingestd.storage.partitions import WEEK, ensure_partitions, week_start
    from psycopg import AsyncConnection

    weeks = []
    week, last = week_start(min(times)), week_start(max(times))
    while week <= last:
        weeks.append(week)
        week += WEEK

    async def central_weeks() -> None:
        async with await AsyncConnection.connect(dsn, autocommit=True) as conn:
            await ensure_partitions(conn, weeks)

    asyncio.run(central_weeks())
    with psycopg.connect(dsn, autocommit=True) as conn:
        kind = conn.execute(
            "SELECT relkind::text FROM pg_class WHERE oid = 'fleet.power_measurements_scaled'::regclass"
        ).fetchone()
        if kind and kind[0] == "p":
            conn.execute(CREATE_COPY_TABLE + " PARTITION BY RANGE (time)")
            for start in weeks:
                conn.execute(
                    sql.SQL("CREATE TABLE {} PARTITION OF {} FOR VALUES FROM ({}) TO ({})").format(
                        sql.Identifier(f"{COPY_TABLE}_{start:%Y%m%d}"),
                        sql.Identifier(COPY_TABLE),
                        sql.Literal(start),
                        sql.Literal(start + WEEK),
                    )
                )
        else:
            conn.execute(CREATE_COPY_TABLE)


def stored_rows(rows: Sequence[MeasurementTuple], customer: int) -> list[tuple[Any, ...]]:
    """The rows as ingestd stores them (`STORED_COLUMNS`): the baseline does the same writes,
    not 24 doubles where ingestd writes 24 integers and 24 nulls. Split before any clock starts,
    by fleetcore's rule (`scaled_or_none`), which ingestd's vectorised split follows."""
    resolutions = [RESOLUTIONS[f] for f in MEASUREMENT_VALUE_FIELDS]
    out = []
    for time_, device, received, *values in rows:
        scaled = [
            None if v is None else scaled_or_none(v, r)
            for v, r in zip(values, resolutions, strict=True)
        ]
        exact = [v if k is None else None for v, k in zip(values, scaled, strict=True)]
        out.append((time_, device, received, *scaled, *exact, customer))
    return out


def copy_batches(conn: psycopg.Connection[Any], batches: Sequence[Sequence[Any]]) -> None:
    types = list(STORED_TYPES)
    for batch in batches:
        with conn.transaction(), conn.cursor() as cur, cur.copy(COPY_STATEMENT) as copy:
            copy.set_types(types)
            for row in batch:
                copy.write_row(row)
