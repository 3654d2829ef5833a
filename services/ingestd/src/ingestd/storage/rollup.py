"""Keeping `fleet.hourly_per_device` current, back-fills included, however old.

Each measurement batch marks the (customer, device, hour) buckets it touched in
`fleet.hourly_dirty`, in the batch's own transaction (so a committed row always has its mark;
`storage.writes.mark_dirty`, with the buckets chosen by `storage.state`).
The housekeeping task then:
- on plain PostgreSQL, recomputes those buckets from the raw rows into `fleet.hourly_rollup`
  and their quarters into `fleet.quarter_rollup` (`refresh_rollup`); until then the views
  compute them from the raw rows at read time;
- on TimescaleDB, where real-time aggregation covers only what is not materialized yet, marks
  only samples before the current hour (`StorageState.dirty_horizon`: the steady flow marks each
  device's last hour once, in the first minute of the next) and refreshes both
  continuous aggregates (hourly and quarter-hour) over their hours with
  `refresh_continuous_aggregate`, merged into contiguous time ranges, a bounded number of ranges
  per cycle (`refresh_timescale`).

Marks. An hour is recomputed once it has ended and `settle_s` has passed since it ended and since
it was first marked: the hour still being written (every device's, at fleet scale touched by every
batch) is not recomputed once per batch but once, after it ends; until then the view computes it
from its raw rows. A batch that touches a marked hour the refresher has not picked yet leaves the
mark as it is (no new row version, no index entry: 10,000 gateways re-touch every device-hour
every minute); only a picked mark gets a new `version` (and is unpicked).

Race-free clearing: the refresher picks marks in a statement of its own (`picked = true`,
committed, skipping marks locked by a batch in flight), recomputes in a later statement (a newer
snapshot, which sees every batch that touched a picked mark before the pick), and deletes only
marks whose version did not change meanwhile. A batch that touches a mark after the pick waits
for the pick to commit and bumps its version (`ON CONFLICT … WHERE d.picked` always sees the
latest row), so its bucket stays marked and is recomputed in a later cycle; a batch in flight
holds the lock on its marks, so the pick skips them until it commits.

Stored energy: the hours whose energy a recomputed hour can move are recomputed into
`fleet.energy_hours` (`storage.stored_energy`), on plain PostgreSQL in the recompute's
transaction after its marks are cleared, on TimescaleDB after the refresh, before its marks are.

Corrections: a recompute whose counter summaries change a stored hour (or store a late hour for
the first time) records the span of energy it can move in `fleet.energy_revisions`
(`storage.revisions`); on plain PostgreSQL in the recompute's transaction, on TimescaleDB by
comparing the materialized summaries before and after the refresh.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from psycopg import AsyncConnection

from ingestd.storage.aggregate import (
    AGGREGATE_COLUMNS,
    COUNTER_COLUMNS,
    PLAIN_BUCKET_VALUES,
    plain_bucket_rows,
)
from ingestd.storage.energy_upkeep import one_snapshot, store_spans
from ingestd.storage.quarters import CLEAR_QUARTERS, RECOMPUTE_QUARTERS
from ingestd.storage.revisions import record_revisions, stored_counters

__all__ = ["RefreshReport", "count_dirty", "refresh_rollup", "refresh_timescale"]

PICK_DIRTY = """
WITH due AS (
    SELECT customer_id, device_id, bucket FROM fleet.hourly_dirty
    WHERE marked_at <= now() - make_interval(secs => %(settle_s)s)
      AND bucket <= now() - make_interval(secs => %(settle_s)s) - INTERVAL '1 hour'
    ORDER BY bucket LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
UPDATE fleet.hourly_dirty d SET picked = true FROM due
WHERE d.customer_id = due.customer_id AND d.device_id = due.device_id AND d.bucket = due.bucket
RETURNING d.customer_id, d.device_id, d.bucket, d.version,
    d.marked_at > d.bucket + INTERVAL '1 hour' + make_interval(secs => %(settle_s)s) AS late
"""

_UPDATE_SET = ", ".join(f"{c} = EXCLUDED.{c}" for c in AGGREGATE_COLUMNS[3:])
_COUNTERS_TEXT = "({})::text".format(", ".join("{0}." + c for c in COUNTER_COLUMNS))
# Recompute the picked hours; an unchanged hour is not rewritten. Answers the hours whose energy
# may have changed for a reader (storage.revisions): counter summaries that differ from the stored
# ones, or an hour stored for the first time whose first mark was `late`. (`old` reads the rows as
# they were before this statement: a data-modifying CTE's changes are not visible to the others.)
RECOMPUTE_ROLLUP = f"""
WITH d AS (
    SELECT * FROM unnest(%s::bigint[], %s::bigint[], %s::timestamptz[], %s::boolean[])
        AS d(customer_id, device_id, bucket, late)
), fresh AS MATERIALIZED (
    SELECT d.bucket, d.customer_id, d.device_id, d.late, {PLAIN_BUCKET_VALUES}
    FROM d {plain_bucket_rows("d")}
), old AS MATERIALIZED (
    SELECT r.customer_id, r.device_id, r.bucket, {_COUNTERS_TEXT.format("r")} AS counters
    FROM fleet.hourly_rollup r JOIN d USING (customer_id, device_id, bucket)
), written AS (
    INSERT INTO fleet.hourly_rollup AS r ({", ".join(AGGREGATE_COLUMNS)})
    SELECT {", ".join(AGGREGATE_COLUMNS)} FROM fresh
    ON CONFLICT (customer_id, device_id, bucket) DO UPDATE SET {_UPDATE_SET}
    WHERE ({", ".join(f"r.{c}" for c in AGGREGATE_COLUMNS[3:])}) IS DISTINCT FROM
          ({", ".join(f"EXCLUDED.{c}" for c in AGGREGATE_COLUMNS[3:])})
)
SELECT f.customer_id, f.device_id, f.bucket
FROM fresh f LEFT JOIN old o USING (customer_id, device_id, bucket)
WHERE CASE WHEN o.bucket IS NULL THEN f.late
           ELSE o.counters IS DISTINCT FROM {_COUNTERS_TEXT.format("f")} END
"""

COUNT_DIRTY = "SELECT count(*) FROM fleet.hourly_dirty"
NO_JIT = "SET LOCAL jit = off"
REFRESH_TIMESCALE = (
    "CALL refresh_continuous_aggregate('fleet.hourly_per_device', %s, %s)",
    "CALL refresh_continuous_aggregate('fleet.quarter_per_device', %s, %s)",
)

CLEAR_DIRTY = """
DELETE FROM fleet.hourly_dirty d
USING unnest(%s::bigint[], %s::bigint[], %s::timestamptz[], %s::bigint[]) AS p(customer_id, device_id, bucket, version)
WHERE d.customer_id = p.customer_id AND d.device_id = p.device_id AND d.bucket = p.bucket
  AND d.version = p.version
"""


@dataclass(frozen=True, slots=True)
class RefreshReport:
    buckets: int
    ranges: int = 0


async def _pick(conn: AsyncConnection[Any], settle_s: float, limit: int) -> list[tuple[Any, ...]]:
    """Pick due marks in a transaction of their own: committed before the recompute starts."""
    async with conn.transaction():
        cur = await conn.execute(PICK_DIRTY, {"settle_s": settle_s, "limit": limit})
        return sorted(await cur.fetchall(), key=lambda row: row[2])


async def _clear(conn: AsyncConnection[Any], picked: list[tuple[Any, ...]]) -> None:
    columns = list(zip(*picked, strict=True))[:4]
    await conn.execute(CLEAR_DIRTY, [list(c) for c in columns])


async def refresh_rollup(
    conn: AsyncConnection[Any], *, settle_s: float = 0.0, limit: int = 5000
) -> RefreshReport:
    """Plain PostgreSQL: recompute up to `limit` due marked buckets into the rollup table.

    `conn` must be in autocommit mode (the pick commits before the recompute)."""
    picked = await _pick(conn, settle_s, limit)
    if not picked:
        return RefreshReport(0)
    async with conn.transaction():
        # The estimate of thousands of one-hour lookups passes jit_above_cost; compiling the
        # query then takes longer than running it (0.5 s per recompute on PostgreSQL 15).
        await conn.execute(NO_JIT)
        customers, devices, buckets, _, late = (list(c) for c in zip(*picked, strict=True))
        cur = await conn.execute(RECOMPUTE_ROLLUP, (customers, devices, buckets, late))
        await record_revisions(conn, list(await cur.fetchall()))
        await conn.execute(CLEAR_QUARTERS, (customers, devices, buckets))
        await conn.execute(RECOMPUTE_QUARTERS, (customers, devices, buckets))
        await _clear(conn, picked)
        await store_spans(conn, [row[:3] for row in picked])
    return RefreshReport(len(picked))


def _ranges(buckets: Sequence[datetime]) -> list[tuple[datetime, datetime]]:
    """Merge hour buckets into contiguous [start, end) ranges."""
    ranges: list[tuple[datetime, datetime]] = []
    for bucket in sorted(set(buckets)):
        end = bucket + timedelta(hours=1)
        if ranges and bucket <= ranges[-1][1]:
            ranges[-1] = (ranges[-1][0], max(ranges[-1][1], end))
        else:
            ranges.append((bucket, end))
    return ranges


async def refresh_timescale(
    conn: AsyncConnection[Any], *, settle_s: float = 0.0, limit: int = 5000, max_ranges: int = 20
) -> RefreshReport:
    """TimescaleDB: refresh the continuous aggregate over the marked (old) buckets.

    `conn` must be in autocommit mode: `refresh_continuous_aggregate` refuses to run inside a
    transaction block. At most `max_ranges` refresh calls per cycle; the rest wait for the next.
    """
    picked = await _pick(conn, settle_s, limit)
    if not picked:
        return RefreshReport(0)
    ranges = _ranges([row[2] for row in picked])[:max_ranges]
    done = [row for row in picked if any(start <= row[2] < end for start, end in ranges)]
    keys = [row[:3] for row in done]
    before = await stored_counters(conn, keys)
    for start, end in ranges:
        for refresh in REFRESH_TIMESCALE:
            await conn.execute(refresh, (start, end))
    after = await stored_counters(conn, keys)
    await record_revisions(conn, [
        row[:3] for row in done
        if after.get(row[:3]) != before.get(row[:3]) and (row[:3] in before or row[4])
    ])  # fmt: skip
    async with one_snapshot(conn):
        await store_spans(conn, keys)
    await _clear(conn, done)
    return RefreshReport(len(done), len(ranges))


async def count_dirty(conn: AsyncConnection[Any]) -> int | None:
    """Hours waiting for the rollup (exported as a metric)."""
    cur = await conn.execute(COUNT_DIRTY)
    row = await cur.fetchone()
    return int(row[0]) if row else None
