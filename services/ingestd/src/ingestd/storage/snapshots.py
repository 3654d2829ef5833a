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

from psycopg import AsyncConnection

__all__ = ["READ_SNAPSHOT", "read_snapshot"]

READ_SNAPSHOT = "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"
"""The first statement of a read: every later statement of the transaction sees its snapshot."""


@asynccontextmanager
async def read_snapshot(conn: AsyncConnection[Any]) -> AsyncIterator[AsyncConnection[Any]]:
    """`conn` (autocommit or idle) in a read-only REPEATABLE READ transaction of its own."""
    async with conn.transaction():
        await conn.execute(READ_SNAPSHOT)
        yield conn
