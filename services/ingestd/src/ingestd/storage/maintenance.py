"""Hourly storage upkeep, run by the housekeeping task: partitions ahead, a closed week's index
packed (`partitions.pack_closed_week`), and raw-data retention.

Only one replica upkeeps at a time: `housekeeping_turn` takes a session-level advisory lock and
says whether this replica got it. Retention drops whole weekly partitions (plain PostgreSQL) or
chunks (`drop_chunks`, TimescaleDB); the hourly aggregate is never touched.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import structlog
from psycopg import AsyncConnection

from ingestd.storage.bootstrap import StorageMode
from ingestd.storage.locks import HOUSEKEEPING_LOCK, session_turn
from ingestd.storage.partitions import (
    WEEK,
    drop_partitions_before,
    ensure_partitions,
    pack_closed_week,
)
from ingestd.storage.state import StorageState

__all__ = ["housekeeping_turn", "maintain"]

log = structlog.get_logger("ingestd.housekeeping")

DROP_CHUNKS = "SELECT drop_chunks('fleet.power_measurements_scaled', older_than => %s)"


@asynccontextmanager
async def housekeeping_turn(conn: AsyncConnection[Any]) -> AsyncIterator[bool]:
    """True while this connection holds the deployment-wide housekeeping turn, False when
    another replica has it. `conn` must be autocommit (the lock is session-level)."""
    async with session_turn(conn, HOUSEKEEPING_LOCK) as ours:
        yield ours


async def maintain(conn: AsyncConnection[Any], state: StorageState) -> None:
    """Create the weekly partitions ahead (plain PostgreSQL), apply the retention, then pack a
    closed week's index (plain PostgreSQL; weeks the retention drops are not packed first)."""
    plan = state.plan
    now = datetime.now(UTC)
    if state.mode is StorageMode.POSTGRESQL:
        created = await ensure_partitions(
            conn, [now + WEEK * i for i in range(plan.partitions_ahead + 1)]
        )
        if created:
            log.info("partitions_created", weeks=[w.date().isoformat() for w in created])
    if plan.retention is not None:
        await _retention(conn, state, now - plan.retention)
    if state.mode is StorageMode.POSTGRESQL:
        started = time.monotonic()
        if packed := await pack_closed_week(conn, now):
            log.info("index_packed", index=packed, seconds=round(time.monotonic() - started, 1))


async def _retention(conn: AsyncConnection[Any], state: StorageState, cutoff: datetime) -> None:
    if state.mode is StorageMode.POSTGRESQL:
        dropped = await drop_partitions_before(conn, cutoff)
        state.known_weeks = {w for w in state.known_weeks if w + WEEK > cutoff}
    elif state.mode is StorageMode.TIMESCALEDB:
        cur = await conn.execute(DROP_CHUNKS, (cutoff,))
        dropped = [str(row[0]) for row in await cur.fetchall()]
    else:
        return
    if dropped:
        log.info("retention_dropped", before=cutoff.isoformat(), dropped=dropped)
