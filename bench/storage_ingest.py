"""bench/storage.py's rows through ingestd's own write path, into a database as `ingestd migrate`
leaves it, and read back through the readers' view.

The rows of `src` (generated once by bench/storage.py) are read an hour at a time (every meter,
60 samples each) as binary COPY, turned into the columns a columnar batch decodes to, and stored
by `ingestd.storage.writes.store_measurement_columns` — the probe, the binary COPY stream in the
stored layout (`storage.copybuffer`: each value as integer steps or as the exact double), the
transaction — exactly as a batch from a gateway is. On TimescaleDB every chunk is then
compressed (what the compression policy does an hour after a chunk ends); on plain PostgreSQL
every week closed by now gets its index packed (what housekeeping does once a week is a day
past its end, `storage.partitions.pack_closed_week`), the size as ingested kept beside. The check reads every
row back through `fleet.power_measurements` as binary COPY and compares the bytes with `src`'s:
bit-identical or not, row by row.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import psycopg
from fleetcore import MEASUREMENT_VALUE_FIELDS, Column, MeasurementColumns
from fleetdev.pgcluster import PgCluster

__all__ = ["central_database", "load_through_ingestd", "stored_bytes", "values_not_identical"]

_FIELDS = ("time", "device_id", "received_at", *MEASUREMENT_VALUE_FIELDS)
_HEADER = 19  # PGCOPY signature, flags, extension length
_POSTGRES_EPOCH_US = 946_684_800_000_000
_RECORD = np.dtype(
    [("count", ">i2")]
    + [
        item
        for name in _FIELDS
        for item in ((f"{name}_len", ">i4"), (name, ">i8" if name in _FIELDS[:3] else ">f8"))
    ]
)
WINDOW = "time >= %(lo)s AND time < %(hi)s"
SOURCE_ROWS = f"COPY (SELECT {', '.join(_FIELDS)} FROM src WHERE {WINDOW} ORDER BY device_id, time) TO STDOUT (FORMAT BINARY)"
READ_BACK = "COPY (SELECT {cols} FROM {table} WHERE {window} ORDER BY device_id, time) TO STDOUT (FORMAT BINARY)"
VALUE_COLUMNS = ", ".join(
    ("time", "customer_id", "device_id", "received_at", *MEASUREMENT_VALUE_FIELDS)
)


def central_database(cluster: PgCluster, name: str, *, timescale: bool, chunk_hours: int) -> str:
    """A database as `ingestd migrate` leaves it, on the chosen storage path."""
    from ingestd.migrate import apply_migrations
    from ingestd.storage import StoragePlan, bootstrap_database

    dsn = cluster.create_database(name)
    apply_migrations(dsn)
    plan = StoragePlan(
        timescaledb="on" if timescale else "off", chunk_interval=timedelta(hours=chunk_hours)
    )
    asyncio.run(bootstrap_database(dsn, plan))
    return dsn


def _columns(stream: bytes) -> MeasurementColumns:
    records = np.frombuffer(
        stream, _RECORD, offset=_HEADER, count=(len(stream) - _HEADER - 2) // _RECORD.itemsize
    )
    columns = {}
    for name in _FIELDS:
        values = records[name].astype(np.int64 if name in _FIELDS[:3] else np.float64)
        if name in ("time", "received_at"):
            values = values + _POSTGRES_EPOCH_US
        columns[name] = Column(values)
    return MeasurementColumns(len(records), columns)


def _windows(start: datetime, days: int, hours: int = 1) -> list[tuple[datetime, datetime]]:
    step = timedelta(hours=hours)
    return [(start + step * i, start + step * (i + 1)) for i in range(days * 24 // hours)]


async def _load(src_dsn: str, dsn: str, start: datetime, days: int) -> int:
    from ingestd.storage.partitions import ensure_partitions
    from ingestd.storage.writes import store_measurement_columns

    rows = 0
    async with (
        await psycopg.AsyncConnection.connect(src_dsn) as src,
        await psycopg.AsyncConnection.connect(dsn) as conn,
    ):
        if not await _is_hypertable(conn):  # the weekly partitions a batch's prepare step makes
            await ensure_partitions(conn, [start + timedelta(days=d) for d in range(days + 1)])
        for lo, hi in _windows(start, days):
            buffer = bytearray()
            async with src.cursor().copy(SOURCE_ROWS, {"lo": lo, "hi": hi}) as copy:
                async for data in copy:
                    buffer += data
            batch = _columns(bytes(buffer))
            async with conn.transaction():
                result = await store_measurement_columns(conn, 1, batch)
            rows += result.accepted
    return rows


async def _is_hypertable(conn: psycopg.AsyncConnection[Any]) -> bool:
    cur = await conn.execute(
        "SELECT relkind = 'r' FROM pg_class WHERE oid = 'fleet.power_measurements_scaled'::regclass"
    )
    row = await cur.fetchone()
    return bool(row and row[0])


def load_through_ingestd(
    src_dsn: str, dsn: str, start: str, days: int, *, timescale: bool
) -> dict[str, Any]:
    """Store `src` through ingestd's write path; compress every chunk on TimescaleDB."""
    began = datetime.fromisoformat(start).astimezone(UTC)
    started = time.monotonic()
    rows = asyncio.run(_load(src_dsn, dsn, began, days))
    out: dict[str, Any] = {"rows": rows, "load_s": time.monotonic() - started}
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE fleet.power_measurements_scaled")
        if timescale:
            out["uncompressed_bytes"] = stored_bytes(conn, timescale=True)
            started = time.monotonic()
            conn.execute(
                "SELECT count(compress_chunk(c)) FROM show_chunks('fleet.power_measurements_scaled') c"
            )
            out["compress_s_per_million_rows"] = (time.monotonic() - started) * 1e6 / max(rows, 1)
            conn.execute("VACUUM ANALYZE fleet.power_measurements_scaled")
        else:
            out["as_ingested_bytes"] = stored_bytes(conn, timescale=False)
            started = time.monotonic()
            out["packed_indexes"] = asyncio.run(_pack_closed_weeks(dsn))
            out["pack_s_per_million_rows"] = (time.monotonic() - started) * 1e6 / max(rows, 1)
        out["bytes"] = stored_bytes(conn, timescale=timescale)
    return out


async def _pack_closed_weeks(dsn: str) -> int:
    """What housekeeping does to the weeks closed by now, one maintenance round per week."""
    from ingestd.storage.partitions import pack_closed_week

    packed = 0
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        while await pack_closed_week(conn, datetime.now(UTC)):
            packed += 1
    return packed


def stored_bytes(conn: psycopg.Connection[Any], *, timescale: bool) -> int:
    query = (
        "SELECT total_bytes FROM hypertable_detailed_size('fleet.power_measurements_scaled')"
        if timescale
        else "SELECT sum(pg_total_relation_size(relid)) FROM pg_partition_tree('fleet.power_measurements_scaled') WHERE isleaf"
    )
    row = conn.execute(query).fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def values_not_identical(src_dsn: str, dsn: str, start: str, days: int) -> int:
    """Rows whose keys or values (as bytes) read back through the view differ from `src`'s, plus
    rows missing on either side."""
    began = datetime.fromisoformat(start).astimezone(UTC)
    differing = 0
    with psycopg.connect(src_dsn) as src, psycopg.connect(dsn) as conn:
        for lo, hi in _windows(began, days, hours=24):
            params = {"lo": lo, "hi": hi}
            sent = _copy_rows(
                src, READ_BACK.format(cols=VALUE_COLUMNS, table="src", window=WINDOW), params
            )
            back = _copy_rows(
                conn,
                READ_BACK.format(
                    cols=VALUE_COLUMNS, table="fleet.power_measurements", window=WINDOW
                ),
                params,
            )
            differing += abs(len(sent) - len(back)) + sum(
                a != b for a, b in zip(sent, back, strict=False)
            )
    return differing


def _copy_rows(
    conn: psycopg.Connection[Any], statement: str, params: dict[str, Any]
) -> list[bytes]:
    with conn.cursor().copy(statement, params) as copy:
        return [bytes(row) for row in copy]
