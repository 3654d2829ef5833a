"""The deployment-wide turns ingestd's replicas take, as PostgreSQL advisory locks.

Session locks and transaction locks share one key space, so every key is here, each once (two
turns that shared a key would make one wait for, or skip because of, the other):

    BOOTSTRAP_LOCK    storage bootstrap (`ingestd migrate`, a replica's start): waits its turn
    PARTITION_LOCK    creating or dropping weekly partitions, for one transaction
    HOUSEKEEPING_LOCK the hourly upkeep: one replica at a time, the others skip
    CONVERSION_LOCK   `ingestd convert-storage`: a second run is refused
    FLEET_STATE_LOCK  deriving the fleet's gateway states, for one transaction; others skip

A session lock needs an autocommit connection (it outlives transactions); a transaction lock ends
with the transaction it was taken in.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from psycopg import AsyncConnection

__all__ = [
    "BOOTSTRAP_LOCK",
    "CONVERSION_LOCK",
    "FLEET_STATE_LOCK",
    "HOUSEKEEPING_LOCK",
    "PARTITION_LOCK",
    "session_lock",
    "session_turn",
    "transaction_lock",
    "transaction_turn",
]

BOOTSTRAP_LOCK = 0x466C_6565_7400  # "Fleet" + 0
PARTITION_LOCK = 0x466C_6565_7401
HOUSEKEEPING_LOCK = 0x466C_6565_7402
CONVERSION_LOCK = 0x466C_6565_7403
FLEET_STATE_LOCK = 0x466C_6565_7404

LOCK = "SELECT pg_advisory_lock(%s)"
TRY_LOCK = "SELECT pg_try_advisory_lock(%s)"
UNLOCK = "SELECT pg_advisory_unlock(%s)"
XACT_LOCK = "SELECT pg_advisory_xact_lock(%s)"
TRY_XACT_LOCK = "SELECT pg_try_advisory_xact_lock(%s)"


async def _got(conn: AsyncConnection[Any], query: str, key: int) -> bool:
    cur = await conn.execute(query, (key,))
    row = await cur.fetchone()
    return bool(row and row[0])


@asynccontextmanager
async def session_lock(conn: AsyncConnection[Any], key: int) -> AsyncIterator[None]:
    """Hold `key` for the block, waiting for it as long as another session holds it."""
    await conn.execute(LOCK, (key,))
    try:
        yield
    finally:
        await conn.execute(UNLOCK, (key,))


@asynccontextmanager
async def session_turn(conn: AsyncConnection[Any], key: int) -> AsyncIterator[bool]:
    """True while this session holds `key` for the block; False (at once) when another has it."""
    if not await _got(conn, TRY_LOCK, key):
        yield False
        return
    try:
        yield True
    finally:
        await conn.execute(UNLOCK, (key,))


async def transaction_lock(conn: AsyncConnection[Any], key: int) -> None:
    """Hold `key` until the current transaction ends, waiting for it if need be."""
    await conn.execute(XACT_LOCK, (key,))


async def transaction_turn(conn: AsyncConnection[Any], key: int) -> bool:
    """Whether the current transaction got `key` (held until it ends); False at once when another
    holds it."""
    return await _got(conn, TRY_XACT_LOCK, key)
