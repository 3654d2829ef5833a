"""The stored energy's upkeep: the frontiers' advance, and the recompute of what a change moved.

The store itself (`fleet.energy_hours`, the frontiers, the reads that sum it) and its SQL functions
are `ingestd.storage.stored_energy`; this module runs them from the housekeeping and the rollup.

The frontier moves with the housekeeping (`advance_stored_energy`), a round's devices at once
(`ingestd.storage.energy_sets`: their ranges chosen by one statement, stored and moved
`SLICE_DEVICES` per statement): a device's history is computed a bounded number of hours per cycle (the backfill after the migration, or for a new
device: read live meanwhile); afterwards, on TimescaleDB, every hour that ended `settle_s` ago
is stored once the aggregate's watermark has passed it (samples of the current hour do not
mark it there; the store reads the materialized hypertable, `timescale_store`); on plain
PostgreSQL, where every sample marks its hour, the frontier becomes 'infinity' once caught up
and the marks alone say what is not stored yet. Emptying `fleet.hourly_dirty` (TRUNCATE) forgets the store (migration
0013's trigger): without the marks, what changed is not known.

One snapshot: on TimescaleDB the stores run in a REPEATABLE READ transaction (`one_snapshot`).
TimescaleDB reads a continuous aggregate's watermark with `GetTransactionSnapshot()`, under READ
COMMITTED a snapshot newer than the running statement's: a store racing a refresh (the
aggregate's policy, or another statement) could see the watermark moved past an hour whose
materialized rows its snapshot lacks, and store that hour as empty, with no mark left to store
it again.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from psycopg import AsyncConnection

from ingestd.storage.layout import STORED_TABLE

__all__ = [
    "BACKFILL_STEP",
    "SLICE_DEVICES",
    "SLICE_HOURS",
    "advance_stored_energy",
    "energy_slices",
    "one_snapshot",
    "seed_frontiers",
    "store_spans",
    "timescale_store",
]

BACKFILL_STEP = timedelta(days=7)
"""How far one device's frontier moves at most in one housekeeping step."""

# TimescaleDB: the hourly aggregate's materialized hypertable, and its watermark as TimescaleDB's
# own view reads it; nothing materialized yet (the earliest time TimescaleDB knows, 4714 BC, where
# a week before is out of range) is '-infinity'.
MATERIALIZATION = """
SELECT format('%I.%I', h.schema_name, h.table_name), c.mat_hypertable_id
FROM _timescaledb_catalog.continuous_agg c
JOIN _timescaledb_catalog.hypertable h ON h.id = c.mat_hypertable_id
WHERE c.user_view_schema = 'fleet' AND c.user_view_name = 'hourly_per_device'
"""
WATERMARK = """coalesce((SELECT m.at FROM (SELECT _timescaledb_functions.to_timestamp(
    _timescaledb_functions.cagg_watermark({id})) AS at) AS m
    WHERE m.at >= TIMESTAMPTZ '0001-01-01 00:00:00+00'), TIMESTAMPTZ '-infinity')"""


async def timescale_store(conn: AsyncConnection[Any]) -> dict[str, str]:
    """TimescaleDB: `stored_energy_functions`' keyword arguments and `stored_hours` over the
    hourly aggregate's materialized hypertable (after the aggregate is made)."""
    cur = await conn.execute(MATERIALIZATION)
    row = await cur.fetchone()
    if row is None:
        raise LookupError("fleet.hourly_per_device is not a continuous aggregate")
    table, hypertable_id = str(row[0]), int(row[1])
    return {"stored_hours": table, "first_hours": table,
            "horizon": WATERMARK.format(id=hypertable_id)}  # fmt: skip


# What the recomputed hours (customer ids, device ids, hours) can move, stored again where reads
# take the store (`fleet.store_spans_set`: at an hour's end nothing, the frontier step stores it).
STORE_SPANS = "SELECT fleet.store_spans_set(%s, %s, %s)"

# A round of frontier steps (`fleet.energy_steps`: the devices furthest behind, their ranges to
# store), then stored and moved a slice of devices per statement (`fleet.advance_energy_set`).
STEPS = "SELECT * FROM fleet.energy_steps(%(until)s, %(step)s, %(devices)s, %(budget)s, %(hold)s)"
ADVANCE = "SELECT fleet.advance_energy_set(%s, %s, %s, %s, %s)"
SLICE_DEVICES = 1000
SLICE_HOURS = 5000
"""A statement stores and moves at most `SLICE_DEVICES` devices and, past its first device, at
most `SLICE_HOURS` device-hours (a backfill's devices store up to a week each): a bounded
stretch of one database core (an hour's end: ~1,000 devices, ~0.2 s), the round's time budget
checked between statements."""


def energy_slices(
    due: list[tuple[Any, ...]], devices: int, hours: int
) -> list[list[tuple[Any, ...]]]:
    """`due` (customer, device, lo, hi, …) cut into consecutive slices of at most `devices`
    devices and, past a slice's first device, `hours` hours to store."""
    slices: list[list[tuple[Any, ...]]] = []
    held = 0.0
    for row in due:
        stored = max(0.0, (row[3] - row[2]) / timedelta(hours=1))
        if not slices or len(slices[-1]) >= devices or held + stored > hours:
            slices.append([])
            held = 0.0
        slices[-1].append(row)
        held += stored
    return slices


SEED_MARKED = """
INSERT INTO fleet.energy_frontier (customer_id, device_id)
SELECT DISTINCT * FROM unnest(%s::bigint[], %s::bigint[])
ON CONFLICT DO NOTHING
"""
# Devices of the full sets, of the marks and (TimescaleDB, where samples of the current hour
# mark nothing) of the rows sampled since %(since)s, without a frontier yet (read live until
# stored).
SEED = """
INSERT INTO fleet.energy_frontier (customer_id, device_id)
SELECT n.customer_id, n.device_id
FROM (SELECT customer_id, id AS device_id FROM fleet.devices
      UNION SELECT customer_id, device_id FROM fleet.hourly_dirty {recent}) AS n
WHERE NOT EXISTS (SELECT 1 FROM fleet.energy_frontier f
                  WHERE f.customer_id = n.customer_id AND f.device_id = n.device_id)
ON CONFLICT DO NOTHING
"""
RECENT = f"""UNION SELECT customer_id, device_id FROM {STORED_TABLE}
                  WHERE time >= %(since)s"""


ONE_SNAPSHOT = "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"


@asynccontextmanager
async def one_snapshot(conn: AsyncConnection[Any]) -> AsyncIterator[None]:
    """A REPEATABLE READ transaction on the autocommit connection `conn`: every statement in it,
    and TimescaleDB's watermark look-ups, see the transaction's snapshot. (Only the housekeeping
    writes the store and the frontiers, one cycle at a time: no serialization failure to expect.)"""
    async with conn.transaction():
        await conn.execute(ONE_SNAPSHOT)
        yield


async def store_spans(conn: AsyncConnection[Any], hours: list[tuple[Any, ...]]) -> int:
    """Recompute the stored energy of the spans the recomputed `hours` (customer, device, hour)
    can move; the number of hours stored. A device seen here for the first time gets its
    frontier (so every marked device has one, whenever the minute's seeding ran)."""
    if not hours:
        return 0
    columns = [list(c) for c in zip(*hours, strict=True)]
    await conn.execute(SEED_MARKED, columns[:2])
    cur = await conn.execute(STORE_SPANS, columns)
    row = await cur.fetchone()
    return int(row[0]) if row else 0


async def seed_frontiers(
    conn: AsyncConnection[Any], *, timescale: bool, since: datetime | None = None
) -> int:
    """Give every known device a frontier; the number of devices added. On TimescaleDB the
    devices of the rows sampled since `since` (default: the last hour) count too — samples of
    the current hour mark nothing there. (On plain PostgreSQL every sample marks its hour: the
    marks know every active device, and the raw table has no index on time alone.)

    The raw rows are the costly part: a fleet's last hour is millions of rows (10,000 gateways:
    ~16 M), and scanning them every minute took a database core for seconds each time, growing
    through the hour — bursts in which the ingest path's batches queued and were refused
    (issue 26). The housekeeping passes the time of its previous seed (less a margin) instead,
    and the whole last hour once an hour (`housekeeping.SEED_FULL_EVERY`)."""
    if not timescale:
        cur = await conn.execute(SEED.format(recent=""))
        return cur.rowcount
    start = since if since is not None else datetime.now(UTC) - timedelta(hours=1)
    cur = await conn.execute(SEED.format(recent=RECENT), {"since": start})
    return cur.rowcount


async def advance_stored_energy(
    conn: AsyncConnection[Any],
    *,
    settle_s: float,
    budget_hours: int,
    hold: bool,
    now: datetime | None = None,
    step: timedelta = BACKFILL_STEP,
    seconds: float = 10.0,
    slice_devices: int = SLICE_DEVICES,
    slice_hours: int = SLICE_HOURS,
) -> int:
    """Move the frontiers of the devices furthest behind towards the start of the hour that
    ended `settle_s` ago (on TimescaleDB at most the aggregate's watermark), about
    `budget_hours` device-hours of work, `slice_devices` devices (`slice_hours` hours to store)
    per statement and no statement started after `seconds` (the first one always is); the
    devices moved. `conn` in autocommit mode (the round runs in a transaction of its own,
    `one_snapshot`: the watermark and the summaries in one snapshot)."""
    moment = (now or datetime.now(UTC)) - timedelta(seconds=settle_s)
    until = moment.replace(minute=0, second=0, microsecond=0)
    params = {"until": until, "step": step, "hold": hold, "devices": max(1, budget_hours),
              "budget": budget_hours}  # fmt: skip
    started = time.monotonic()
    moved = 0
    async with one_snapshot(conn):
        cur = await conn.execute(STEPS, params)
        due = await cur.fetchall()
        for i, part in enumerate(energy_slices(due, max(1, slice_devices), slice_hours)):
            if i and time.monotonic() - started >= seconds:
                break
            await conn.execute(ADVANCE, [list(c) for c in zip(*part, strict=True)])
            moved += len(part)
    return moved
