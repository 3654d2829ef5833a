"""Keeping `fleet.hourly_per_device` current, back-fills included, however old.

Each measurement batch marks the (customer, device, hour) buckets it touched in
`fleet.hourly_dirty`, in the batch's own transaction (so a committed row always has its mark).
The housekeeping task then:
- on plain PostgreSQL, recomputes those buckets from the raw rows into `fleet.hourly_rollup`
  (`refresh_rollup`); until then the view computes them from the raw rows at read time;
- on TimescaleDB, where the refresh policy only looks back `start_offset`, marks only buckets
  older than that window and refreshes them with `refresh_continuous_aggregate`, merged into
  contiguous time ranges, a bounded number of ranges per cycle (`refresh_timescale`).

Race-free clearing: the refresher reads the marks with their `version`, recomputes in a later
statement (a newer snapshot), and deletes only marks whose version did not change meanwhile. A
batch that commits after the recompute's snapshot re-marks its bucket (insert, or version + 1),
so its bucket is recomputed again in a later cycle.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from fleetcore import MeasurementRow
from psycopg import AsyncConnection

from ingestd.storage.aggregate import AGGREGATE_COLUMNS, PLAIN_AGGREGATE_SELECT

__all__ = ["RefreshReport", "mark_dirty", "refresh_rollup", "refresh_timescale", "touched_buckets"]

_HOUR_S = 3600

MARK_DIRTY = """
INSERT INTO fleet.hourly_dirty AS d (customer_id, device_id, bucket)
SELECT %s, u.device_id, to_timestamp(u.hour * 3600)
FROM unnest(%s::bigint[], %s::bigint[]) AS u(device_id, hour)
ORDER BY 2, 3
ON CONFLICT (customer_id, device_id, bucket)
DO UPDATE SET version = d.version + 1, marked_at = now()
"""

PICK_DIRTY = """
SELECT customer_id, device_id, bucket, version FROM fleet.hourly_dirty
WHERE marked_at <= now() - make_interval(secs => %s)
ORDER BY bucket LIMIT %s
"""

_UPDATE_SET = ", ".join(f"{c} = EXCLUDED.{c}" for c in AGGREGATE_COLUMNS[3:])
RECOMPUTE_ROLLUP = f"""
INSERT INTO fleet.hourly_rollup ({", ".join(AGGREGATE_COLUMNS)})
SELECT d.bucket, d.customer_id, d.device_id, {PLAIN_AGGREGATE_SELECT}
FROM unnest(%s::bigint[], %s::bigint[], %s::timestamptz[]) AS d(customer_id, device_id, bucket)
JOIN fleet.power_measurements m
  ON m.customer_id = d.customer_id AND m.device_id = d.device_id
 AND m.time >= d.bucket AND m.time < d.bucket + INTERVAL '1 hour'
GROUP BY d.bucket, d.customer_id, d.device_id
ON CONFLICT (customer_id, device_id, bucket) DO UPDATE SET {_UPDATE_SET}
"""

CLEAR_DIRTY = """
DELETE FROM fleet.hourly_dirty d
USING unnest(%s::bigint[], %s::bigint[], %s::timestamptz[], %s::bigint[]) AS p(customer_id, device_id, bucket, version)
WHERE d.customer_id = p.customer_id AND d.device_id = p.device_id AND d.bucket = p.bucket
  AND d.version = p.version
"""


_SUPERSET_LIMIT = 512


def touched_buckets(
    rows: Sequence[MeasurementRow],
    before: datetime | None = None,
    span: tuple[datetime, datetime] | None = None,
) -> tuple[list[int], list[int]]:
    """(device_id, hour number since the epoch) pairs covering `rows`, as two parallel lists.

    With `before`, only samples older than it count (TimescaleDB: the policy covers the rest).
    With the batch's time `span`, a batch whose devices x hours are few (the steady case: every
    device, the last hour or two) marks that whole grid — a superset, which is harmless (a
    bucket without new rows recomputes to what it was) and needs no per-row work; other batches
    get their exact buckets.
    """
    if before is None and span is not None:
        first_hour = int(span[0].timestamp()) // _HOUR_S
        last_hour = int(span[1].timestamp()) // _HOUR_S
        hours = range(first_hour, last_hour + 1)
        if len(hours) <= _SUPERSET_LIMIT:
            devices = sorted({r.device_id for r in rows})
            if len(devices) * len(hours) <= _SUPERSET_LIMIT:
                return [d for d in devices for _ in hours], [h for _ in devices for h in hours]
    if before is not None:
        keys = {(r.device_id, int(r.time.timestamp()) // _HOUR_S) for r in rows if r.time < before}
    else:
        keys = {(r.device_id, int(r.time.timestamp()) // _HOUR_S) for r in rows}
    ordered = sorted(keys)
    return [k[0] for k in ordered], [k[1] for k in ordered]


async def mark_dirty(
    conn: AsyncConnection[Any], customer_id: int, devices: list[int], hours: list[int]
) -> None:
    """Mark buckets for recomputation, inside the batch's transaction (sorted: no deadlocks)."""
    if devices:
        await conn.execute(MARK_DIRTY, (customer_id, devices, hours))


@dataclass(frozen=True, slots=True)
class RefreshReport:
    buckets: int
    ranges: int = 0


async def _pick(conn: AsyncConnection[Any], settle_s: float, limit: int) -> list[tuple[Any, ...]]:
    cur = await conn.execute(PICK_DIRTY, (settle_s, limit))
    return list(await cur.fetchall())


async def _clear(conn: AsyncConnection[Any], picked: list[tuple[Any, ...]]) -> None:
    columns = list(zip(*picked, strict=True))
    await conn.execute(CLEAR_DIRTY, [list(c) for c in columns])


async def refresh_rollup(
    conn: AsyncConnection[Any], *, settle_s: float = 0.0, limit: int = 5000
) -> RefreshReport:
    """Plain PostgreSQL: recompute up to `limit` marked buckets into the rollup table."""
    async with conn.transaction():
        picked = await _pick(conn, settle_s, limit)
        if not picked:
            return RefreshReport(0)
        customers, devices, buckets, _ = (list(c) for c in zip(*picked, strict=True))
        await conn.execute(RECOMPUTE_ROLLUP, (customers, devices, buckets))
        await _clear(conn, picked)
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
    for start, end in ranges:
        await conn.execute(
            "CALL refresh_continuous_aggregate('fleet.hourly_per_device', %s, %s)", (start, end)
        )
    done = [row for row in picked if any(start <= row[2] < end for start, end in ranges)]
    await _clear(conn, done)
    return RefreshReport(len(done), len(ranges))
