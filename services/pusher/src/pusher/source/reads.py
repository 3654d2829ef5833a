"""Reading what to push from the customer database.

Measurements are read in `(push_xid, device_id, time)` order from the cursor on, and only rows
whose writing transaction lies below the reading snapshot's xmin: every such transaction has
ended, so no row can later appear behind the cursor (see `fleetcore.cursor`). Each query runs in
its own autocommit statement, hence its own fresh snapshot.

PostgreSQL builds each row's JSON and joins the batch itself (`json_build_object`,
`string_agg`: C code next to the data): the pusher receives one ready body per batch and never
builds a Python object per row or value, which keeps its CPU cost and memory small (a batch of
5,000 rows costs the pusher one 2 MB bytes object). Sessions run in UTC, so times come out
as RFC 3339 with a `+00:00` offset.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import psycopg
from fleetcore import PushCursor
from fleetcore.protocol import WireFormat
from psycopg.rows import tuple_row

from pusher.source.carriable import carriable_sql
from pusher.source.cursor import (
    SELECTION,
    after,
    below_horizon,
    cursor_params,
    cursor_time_sql,
    item_columns,
    key_columns,
    order_by,
    selection_params,
)

__all__ = [
    "APPLICATION_NAME",
    "BACKLOG_COUNT_BOUND",
    "Backlog",
    "BlockingTransaction",
    "FullSet",
    "MeasurementBatch",
    "SnapshotHorizon",
    "connect",
    "count_shippable",
    "find_blocking_transaction",
    "ping",
    "read_backlog",
    "read_devices",
    "read_horizon",
    "read_measurements",
    "read_sites",
    "restamp_future_rows",
]

APPLICATION_NAME = "fleet-pusher"

# One round trip returns the whole batch: the body already joined by PostgreSQL (bytea, sent in
# binary: no per-row Python work at all), the row count, the rows the protocol can carry (only
# those are in the body: `carriable.py`), the newest received_at, the cursor key of the last row
# and the first carriable row's JSON (kept if a single row has to be quarantined).
# Items are not ordered inside the body (the server keys every row): only the cursor key is.
READ_MEASUREMENTS = f"""
WITH batch AS MATERIALIZED (
    SELECT {key_columns("r")}, r.received_at,
           {carriable_sql("r.time", "r.received_at")} AS carriable,
           row_to_json(ROW({item_columns("r")})::app.fleet_push_item)::text AS item
    FROM (SELECT m.push_xid, {item_columns("m")}
{SELECTION}) AS r
)
SELECT agg.n, agg.sent, agg.newest, agg.body, last.xid, last.device_id, last.time, first.item
FROM (SELECT count(*) AS n, count(*) FILTER (WHERE b.carriable) AS sent,
             max(b.received_at) FILTER (WHERE b.carriable) AS newest,
             convert_to('{{"items":['
                        || coalesce(string_agg(b.item, ',') FILTER (WHERE b.carriable), '')
                        || ']}}', 'UTF8') AS body
      FROM batch AS b) AS agg
LEFT JOIN LATERAL (
    SELECT l.push_xid::text AS xid, l.device_id, {cursor_time_sql("l.time")} AS time
    FROM batch AS l
    ORDER BY {order_by("l", descending=True)} LIMIT 1) AS last ON true
LEFT JOIN LATERAL (
    SELECT f.item FROM batch AS f WHERE f.carriable
    ORDER BY {order_by("f")} LIMIT 1) AS first ON true
"""

READ_SITES = f"""
SELECT json_strip_nulls(json_build_object(
           'id', s.id, 'name', s.name, 'timezone', s.timezone,
           'address', s.address, 'updated_at', s.updated_at))::text,
       CASE WHEN {carriable_sql("s.updated_at")} THEN s.updated_at END
FROM monitoring.sites AS s
ORDER BY s.id
"""

READ_DEVICES = f"""
SELECT json_strip_nulls(json_build_object(
           'id', d.id, 'site_id', d.site_id, 'serial_number', d.serial_number,
           'model', d.model, 'name', d.name, 'updated_at', d.updated_at))::text,
       CASE WHEN {carriable_sql("d.updated_at")} THEN d.updated_at END
FROM monitoring.devices AS d
ORDER BY d.id
"""

BACKLOG_COUNT_BOUND = 1_000_000

# Three walks of the push index: rows after the cursor counted up to a bound (so the cost stays
# bounded whatever the backlog), the newest row written, and the first row after the cursor.
READ_BACKLOG = f"""
SELECT (SELECT count(*) FROM (
            SELECT 1 FROM monitoring.power_measurements AS m
            WHERE {after("m")}
            LIMIT %(bound)s) AS b),
       (SELECT CASE WHEN {carriable_sql("n.received_at")} THEN n.received_at END
        FROM monitoring.power_measurements AS n
        ORDER BY {order_by("n", descending=True)} LIMIT 1),
       (SELECT CASE WHEN {carriable_sql("f.received_at")} THEN f.received_at END
        FROM monitoring.power_measurements AS f
        WHERE {after("f")}
        ORDER BY {order_by("f")} LIMIT 1)
"""

# Rows after the cursor that the next batch may take (written below the snapshot's xmin).
COUNT_SHIPPABLE = f"""
SELECT count(*) FROM monitoring.power_measurements AS m
WHERE {after("m")}
  AND {below_horizon("m")}
"""

READ_HORIZON = """
SELECT pg_snapshot_xmin(pg_current_snapshot())::text,
       pg_snapshot_xmax(pg_current_snapshot())::text,
       EXISTS (SELECT 1 FROM monitoring.power_measurements
               WHERE push_xid >= pg_snapshot_xmax(pg_current_snapshot()))
"""

# Only transactions that hold an xid move the snapshot's xmin; read-only ones do not.
FIND_BLOCKER = """
SELECT 'backend' AS kind, a.pid, a.datname, a.usename, a.application_name, a.state,
       a.backend_xid::text, a.xact_start, extract(epoch FROM now() - a.xact_start)::float8
FROM pg_stat_activity AS a
WHERE a.backend_xid IS NOT NULL AND a.pid <> pg_backend_pid()
  AND a.xact_start < now() - make_interval(secs => %(min_age_s)s)
UNION ALL
SELECT 'prepared', NULL, p.database, p.owner::text, p.gid, 'prepared',
       p.transaction::text, p.prepared, extract(epoch FROM now() - p.prepared)::float8
FROM pg_prepared_xacts AS p
WHERE p.prepared < now() - make_interval(secs => %(min_age_s)s)
ORDER BY 9 DESC
LIMIT 1
"""

# Rows stamped by a transaction id this server has not reached yet come from another
# cluster (a logical restore): they would wait below no xmin forever. Restamp in chunks;
# each chunk's rows get the chunk's own (current) xid, so they are not picked up again.
RESTAMP_FUTURE_ROWS = """
UPDATE monitoring.power_measurements AS m
SET push_xid = pg_current_xact_id()
WHERE (m.device_id, m.time) IN (
    SELECT f.device_id, f.time FROM monitoring.power_measurements AS f
    WHERE f.push_xid > pg_current_xact_id()
    ORDER BY f.push_xid
    LIMIT %(limit)s)
"""


async def connect(
    database_url: str, *, connect_timeout_s: float = 10.0, statement_timeout_s: float = 60.0
) -> psycopg.AsyncConnection[Any]:
    """An autocommit session in UTC, named so the pusher can tell its own backends apart.

    A database that stops answering is a logged failure, not a hang: every statement is
    cancelled by the server after `statement_timeout_s` (QueryCanceled, an OperationalError),
    and TCP keepalives (idle 30 s, then every 10 s, 3 probes) with a 60 s user timeout drop a
    connection whose peer is gone."""
    timeout_ms = max(1, round(statement_timeout_s * 1000))
    return await psycopg.AsyncConnection.connect(
        database_url,
        autocommit=True,
        application_name=APPLICATION_NAME,
        connect_timeout=max(1, round(connect_timeout_s)),
        options=f"-c TimeZone=UTC -c statement_timeout={timeout_ms}",
        keepalives=1,
        keepalives_idle=30,
        keepalives_interval=10,
        keepalives_count=3,
        tcp_user_timeout=60_000,
    )


async def ping(conn: psycopg.AsyncConnection[Any]) -> None:
    """One round trip: the database answers queries (`pusher check`)."""
    await conn.execute("SELECT 1")


def _envelope(rows: list[str]) -> bytes:
    return ('{"items":[' + ",".join(rows) + "]}").encode()


@dataclass(frozen=True, slots=True)
class MeasurementBatch:
    """Up to `limit` rows after `start`, as a ready body in `format` (JSON here, columnar
    from `columnsource`), not yet compressed; `end` is the cursor after them. `count` rows were
    read, `sent` of them are in the body: the others are uncarriable (`carriable.py`) and
    quarantined when the cursor passes them."""

    start: PushCursor
    end: PushCursor
    body: bytes
    count: int
    limit: int
    newest_received_at: datetime | None
    first_row_json: str | None
    sent: int = -1
    format: WireFormat = WireFormat.JSON
    body_bytes: int = -1
    """The body's size, kept when the body itself is dropped (`without_body`)."""

    def __post_init__(self) -> None:
        if self.sent < 0:
            object.__setattr__(self, "sent", self.count)
        if self.body_bytes < 0:
            object.__setattr__(self, "body_bytes", len(self.body))

    def without_body(self) -> MeasurementBatch:
        """The same batch without its uncompressed body (once compressed, only its size is
        needed: a 5,000-row body is ~0.5 MiB that need not wait on the wire with it)."""
        return replace(self, body=b"", body_bytes=self.body_bytes)

    @property
    def uncarriable(self) -> int:
        return self.count - self.sent

    @property
    def full(self) -> bool:
        return self.count >= self.limit


@dataclass(frozen=True, slots=True)
class FullSet:
    """Every site (or device) of the customer, as a JSON body."""

    body: bytes
    count: int
    newest_updated_at: datetime | None
    oldest_updated_at: datetime | None = None

    def cursor_label(self, resource: str) -> str:
        newest = self.newest_updated_at.isoformat() if self.newest_updated_at else "-"
        return f"{resource}:{self.count}:{newest}"


@dataclass(frozen=True, slots=True)
class Backlog:
    """Rows after the cursor (at most `BACKLOG_COUNT_BOUND`: the count stops there), when the
    newest row was stored, and when the first row after the cursor was."""

    rows: int
    newest_received_at: datetime | None
    first_unshipped_received_at: datetime | None


@dataclass(frozen=True, slots=True)
class SnapshotHorizon:
    """The snapshot's xmin (rows below it are final) and xmax (no xid at or above exists yet)."""

    xmin: int
    xmax: int
    has_future_rows: bool


@dataclass(frozen=True, slots=True)
class BlockingTransaction:
    """A transaction old enough to hold the cursor back, as pg_stat_activity shows it."""

    kind: str
    pid: int | None
    database: str | None
    user: str | None
    application_name: str | None
    state: str | None
    xid: int
    started_at: datetime | None
    age_s: float

    def as_log(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "pid": self.pid,
            "database": self.database,
            "user": self.user,
            "application_name": self.application_name,
            "state": self.state,
            "xid": self.xid,
            "started_at": self.started_at.isoformat() if self.started_at else None,
            "age_s": round(self.age_s, 1),
        }


async def read_measurements(
    conn: psycopg.AsyncConnection[Any], after: PushCursor, limit: int
) -> MeasurementBatch:
    """Read the next batch; memory is bounded by `limit`, never by the backlog."""
    async with conn.cursor(row_factory=tuple_row, binary=True) as cur:
        await cur.execute(READ_MEASUREMENTS, selection_params(after, limit))
        row = await cur.fetchone()
    assert row is not None
    count, sent, newest, body, xid, device_id, time, first = row
    if not count:
        return MeasurementBatch(after, after, _envelope([]), 0, limit, None, None, 0)
    return MeasurementBatch(
        start=after,
        end=PushCursor(int(xid), device_id, time),
        body=bytes(body),
        count=count,
        limit=limit,
        newest_received_at=newest,
        first_row_json=first,
        sent=sent,
    )


async def _read_full_set(conn: psycopg.AsyncConnection[Any], query: str) -> FullSet:
    async with conn.cursor(row_factory=tuple_row) as cur:
        await cur.execute(query)
        rows = await cur.fetchall()
    stamps = [row[1] for row in rows if row[1] is not None]
    newest = max(stamps, default=None)
    oldest = min(stamps, default=None)
    return FullSet(_envelope([row[0] for row in rows]), len(rows), newest, oldest)


async def read_sites(conn: psycopg.AsyncConnection[Any]) -> FullSet:
    return await _read_full_set(conn, READ_SITES)


async def read_devices(conn: psycopg.AsyncConnection[Any]) -> FullSet:
    return await _read_full_set(conn, READ_DEVICES)


async def read_horizon(conn: psycopg.AsyncConnection[Any]) -> SnapshotHorizon:
    async with conn.cursor(row_factory=tuple_row) as cur:
        await cur.execute(READ_HORIZON)
        row = await cur.fetchone()
    assert row is not None
    return SnapshotHorizon(int(row[0]), int(row[1]), bool(row[2]))


async def read_backlog(
    conn: psycopg.AsyncConnection[Any],
    after: PushCursor,
    bound: int | None = BACKLOG_COUNT_BOUND,
) -> Backlog:
    """What is behind the cursor; the count stops at `bound` (None: count every row, as
    `pusher status` does once, where the daemon counts again and again)."""
    async with conn.cursor(row_factory=tuple_row) as cur:
        await cur.execute(READ_BACKLOG, {**cursor_params(after), "bound": bound})
        row = await cur.fetchone()
    assert row is not None
    return Backlog(int(row[0]), row[1], row[2])


async def count_shippable(conn: psycopg.AsyncConnection[Any], after: PushCursor) -> int:
    """Rows after the cursor the next batch may take now (not held back by an open writer)."""
    async with conn.cursor(row_factory=tuple_row) as cur:
        await cur.execute(COUNT_SHIPPABLE, cursor_params(after))
        row = await cur.fetchone()
    return int(row[0]) if row else 0


async def find_blocking_transaction(
    conn: psycopg.AsyncConnection[Any], min_age_s: float
) -> BlockingTransaction | None:
    """The oldest xid-holding transaction (any database of the cluster) older than `min_age_s`.

    Seeing other users' sessions needs the `pg_monitor` role (or superuser); without it the
    blocker is still found but its details come back empty.
    """
    async with conn.cursor(row_factory=tuple_row) as cur:
        await cur.execute(FIND_BLOCKER, {"min_age_s": min_age_s})
        row = await cur.fetchone()
    if row is None:
        return None
    kind, pid, database, user, app, state, xid, started, age = row
    return BlockingTransaction(kind, pid, database, user, app, state, int(xid), started, float(age))


async def restamp_future_rows(conn: psycopg.AsyncConnection[Any], chunk: int = 50_000) -> int:
    """Give rows stamped beyond this server's xid counter a current stamp; return how many."""
    total = 0
    while True:
        async with conn.cursor() as cur:
            await cur.execute(RESTAMP_FUTURE_ROWS, {"limit": chunk})
            total += cur.rowcount
            if cur.rowcount < chunk:
                return total
