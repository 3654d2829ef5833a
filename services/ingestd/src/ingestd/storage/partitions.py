"""Weekly range partitions of `fleet.power_measurements` on plain PostgreSQL.

Weeks start on Monday 00:00 UTC. Partitions are created ahead of time by the housekeeping task
and on demand before a batch that needs one, so a back-fill into a week that has no partition
works. Creation is serialized across replicas by a transaction-level advisory lock and is
idempotent (`CREATE TABLE IF NOT EXISTS … PARTITION OF`). There is no default partition: a row
can only land in the week it belongs to, and retention drops whole weeks.

A week's primary-key index is written in the middle of every meter's key range, so its pages
split half-full while the week is open (72 B/row instead of 36, bench/storage.py). Once a week
is closed (`PACK_AFTER` past its end: late rows and back-fills are rare by then) housekeeping
packs its index once (`pack_closed_week`): fillfactor 100 and `REINDEX INDEX CONCURRENTLY`,
online — inserts and reads go on. The fillfactor left on the index marks it packed. A back-fill
into a packed week still works; the pages it lands on split again.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from psycopg import AsyncConnection, sql

from ingestd.storage.layout import READERS_VIEW, STORED_TABLE
from ingestd.storage.locks import PARTITION_LOCK, transaction_lock

__all__ = [
    "WEEK",
    "drop_partitions_before",
    "ensure_partitions",
    "existing_partition_weeks",
    "pack_closed_week",
    "partition_existing_table",
    "partition_name",
    "week_start",
]

WEEK = timedelta(days=7)
_MONDAY = datetime(2000, 1, 3, tzinfo=UTC)
_NAME_PREFIX = "power_measurements_w"

LIST_PARTITIONS = """
SELECT c.relname FROM pg_inherits i
JOIN pg_class c ON c.oid = i.inhrelid
WHERE i.inhparent = 'fleet.power_measurements_scaled'::regclass
"""


PACK_AFTER = timedelta(days=1)
UNPACKED_INDEXES = """
SELECT c.relname, ic.relname FROM pg_inherits h
JOIN pg_class c ON c.oid = h.inhrelid
JOIN pg_index i ON i.indrelid = c.oid AND i.indisprimary
JOIN pg_class ic ON ic.oid = i.indexrelid
WHERE h.inhparent = 'fleet.power_measurements_scaled'::regclass
  AND NOT coalesce(ic.reloptions @> ARRAY['fillfactor=100'], false)
"""


def week_start(moment: datetime) -> datetime:
    """Monday 00:00 UTC of the week holding `moment`."""
    return _MONDAY + WEEK * ((moment - _MONDAY) // WEEK)


def partition_name(start: datetime) -> str:
    return f"{_NAME_PREFIX}{start:%Y%m%d}"


def _week_from_name(name: str) -> datetime | None:
    if not name.startswith(_NAME_PREFIX):
        return None
    try:
        return datetime.strptime(name[len(_NAME_PREFIX) :], "%Y%m%d").replace(tzinfo=UTC)
    except ValueError:
        return None


def _create_statement(start: datetime) -> sql.Composed:
    return sql.SQL(
        "CREATE TABLE IF NOT EXISTS fleet.{} PARTITION OF fleet.power_measurements_scaled "
        "FOR VALUES FROM ({}) TO ({})"
    ).format(sql.Identifier(partition_name(start)), sql.Literal(start), sql.Literal(start + WEEK))


async def existing_partition_weeks(conn: AsyncConnection[Any]) -> set[datetime]:
    cur = await conn.execute(LIST_PARTITIONS)
    weeks = {_week_from_name(row[0]) for row in await cur.fetchall()}
    return {w for w in weeks if w is not None}


async def ensure_partitions(
    conn: AsyncConnection[Any], weeks: Iterable[datetime]
) -> list[datetime]:
    """Create the partitions of `weeks` that are missing, in a transaction of their own (so the
    parent's lock is not held through a batch); return the weeks created."""
    wanted = sorted({week_start(w) for w in weeks})
    created: list[datetime] = []
    async with conn.transaction():
        await transaction_lock(conn, PARTITION_LOCK)
        existing = await existing_partition_weeks(conn)
        for start in wanted:
            if start not in existing:
                await conn.execute(_create_statement(start))
                created.append(start)
    return created


async def drop_partitions_before(conn: AsyncConnection[Any], cutoff: datetime) -> list[str]:
    """Drop the weekly partitions that end at or before `cutoff`; return their names."""
    dropped: list[str] = []
    async with conn.transaction():
        await transaction_lock(conn, PARTITION_LOCK)
        for start in sorted(await existing_partition_weeks(conn)):
            if start + WEEK <= cutoff:
                name = partition_name(start)
                await conn.execute(sql.SQL("DROP TABLE fleet.{}").format(sql.Identifier(name)))
                dropped.append(name)
    return dropped


async def pack_closed_week(conn: AsyncConnection[Any], now: datetime) -> str | None:
    """Pack the primary-key index of the oldest week closed for `PACK_AFTER` and not packed yet
    (one a call: a week of a large fleet takes a while); return the index's name. `conn` must be
    autocommit (REINDEX CONCURRENTLY runs outside a transaction)."""
    cur = await conn.execute(UNPACKED_INDEXES)
    closed: list[tuple[datetime, str]] = sorted(
        (week, str(index))
        for table, index in await cur.fetchall()
        if (week := _week_from_name(table)) is not None and week + WEEK + PACK_AFTER <= now
    )
    if not closed:
        return None
    index = sql.Identifier("fleet", closed[0][1])
    await conn.execute(sql.SQL("ALTER INDEX {} SET (fillfactor = 100)").format(index))
    await conn.execute(sql.SQL("REINDEX INDEX CONCURRENTLY {}").format(index))
    return closed[0][1]


async def partition_existing_table(conn: AsyncConnection[Any]) -> None:
    """Replace the plain table by a partitioned one with the same columns, keys and rows (the
    readers' view is dropped and made again over the new table)."""
    await conn.execute("DROP VIEW fleet.power_measurements")
    await conn.execute(f"ALTER TABLE {STORED_TABLE} RENAME TO power_measurements_unpartitioned")
    await conn.execute(
        "ALTER TABLE fleet.power_measurements_unpartitioned RENAME CONSTRAINT power_measurements_pkey "
        "TO power_measurements_unpartitioned_pkey"
    )
    await conn.execute(
        f"""CREATE TABLE {STORED_TABLE}
               (LIKE fleet.power_measurements_unpartitioned INCLUDING DEFAULTS INCLUDING CONSTRAINTS
                INCLUDING COMMENTS)
           PARTITION BY RANGE (time)"""
    )
    await conn.execute(
        f"ALTER TABLE {STORED_TABLE} ADD CONSTRAINT power_measurements_pkey "
        "PRIMARY KEY (customer_id, device_id, time)"
    )
    cur = await conn.execute(
        "SELECT DISTINCT date_bin(INTERVAL '7 days', time, TIMESTAMPTZ '2000-01-03 00:00:00+00') "
        "FROM fleet.power_measurements_unpartitioned"
    )
    weeks = [week_start(row[0]) for row in await cur.fetchall()]
    if weeks:
        await ensure_partitions(conn, weeks)
        await conn.execute(
            f"INSERT INTO {STORED_TABLE} SELECT * FROM fleet.power_measurements_unpartitioned"
        )
    await conn.execute("DROP TABLE fleet.power_measurements_unpartitioned")
    for statement in READERS_VIEW:
        await conn.execute(statement)
