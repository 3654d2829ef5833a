"""Reads that must see one snapshot: a read-only REPEATABLE READ transaction.

Not only for consistency between statements: TimescaleDB reads a continuous aggregate's
watermark with `GetTransactionSnapshot()`, which under READ COMMITTED is a *new* snapshot, newer
than the running statement's. A read racing a refresh then sees the watermark moved past an hour
whose materialized rows its own snapshot does not have yet: the hour is in neither part of the
real-time view (tests/ingestd/test_read_snapshot.py). In a REPEATABLE READ transaction both use
the transaction's snapshot. Every reader of `fleet.hourly_per_device` that cannot tolerate a
missing hour reads in one: the read API (`ingestd.handlers.http.snapshot`) and the fleet-state
round's meter inputs (`ingestd.fleetwatch`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from psycopg import AsyncConnection, sql

__all__ = ["READ_SNAPSHOT", "adopt_snapshot", "export_snapshot", "read_snapshot"]

READ_SNAPSHOT = "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"
"""The first statement of a read: every later statement of the transaction sees its snapshot."""
EXPORT_SNAPSHOT = "SELECT pg_export_snapshot()"
ADOPT_SNAPSHOT = sql.SQL("SET TRANSACTION SNAPSHOT {}")


@asynccontextmanager
async def read_snapshot(conn: AsyncConnection[Any]) -> AsyncIterator[AsyncConnection[Any]]:
    """`conn` (autocommit or idle) in a read-only REPEATABLE READ transaction of its own."""
    async with conn.transaction():
        await conn.execute(READ_SNAPSHOT)
        yield conn


async def export_snapshot(conn: AsyncConnection[Any]) -> str:
    """The id of the snapshot of `conn`'s transaction (REPEATABLE READ), for `adopt_snapshot` on
    another connection while this transaction lasts (a read split over two backends)."""
    cur = await conn.execute(EXPORT_SNAPSHOT)
    row = await cur.fetchone()
    return str(row[0]) if row else ""


async def adopt_snapshot(conn: AsyncConnection[Any], snapshot_id: str) -> None:
    """Make `conn`'s transaction (REPEATABLE READ, nothing read yet) see the exported snapshot."""
    await conn.execute(ADOPT_SNAPSHOT.format(sql.Literal(snapshot_id)))
