"""Reading what reconciliation compares and re-sends from the customer database.

What the gateway digests (docs/PROTOCOL.md, "Reconciliation"): its measurement rows at or
behind the push cursor — shipped, or passed as uncarriable — minus the quarantined ones. Rows
after the cursor are the push's business. One statement groups them into (device, UTC hour)
buckets of (count, key-hash sum), by a range scan of the primary key per device; the pass adds
buckets up into whatever cells it compares. The row hash is `fleetcore.reconcile.HASH_SQL`,
the centre's very expression.

Repairs read the rows of chosen (device, hour) cells with the same selection, as a columnar
body (`columns.RECORD_SQL`, the push's own record format) or as gzip-JSON items, in
`(device_id, time)` pages of at most the batch size.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from fleetcore import PushCursor
from fleetcore.reconcile import HASH_PROBE, HASH_SQL, CellDigest, row_hash
from psycopg.rows import tuple_row

from pusher.source.carriable import carriable_sql
from pusher.source.columns import RECORD_SQL, BatchBuilder, columnar_encoder
from pusher.source.cursor import cursor_params, item_columns, up_to
from pusher.source.reads import MeasurementBatch

__all__ = [
    "RepairPage",
    "hash_matches",
    "read_buckets",
    "read_devices_held",
    "read_repair_page",
]

_ROW_HASH = HASH_SQL.format(time="m.time", device="m.device_id")
_NOT_QUARANTINED = """NOT EXISTS (SELECT 1 FROM app.fleet_push_quarantine AS q
                          WHERE q.device_id = m.device_id AND q.time = m.time)"""

# Devices with rows and the oldest row of each: a skip scan of the primary key (one descent
# per device), whatever the table's size.
DEVICES_HELD = """
WITH RECURSIVE d(device_id) AS (
    (SELECT m.device_id FROM monitoring.power_measurements AS m ORDER BY m.device_id LIMIT 1)
    UNION ALL
    SELECT (SELECT m.device_id FROM monitoring.power_measurements AS m
            WHERE m.device_id > d.device_id ORDER BY m.device_id LIMIT 1)
    FROM d WHERE d.device_id IS NOT NULL
)
SELECT d.device_id,
       (SELECT min(m.time) FROM monitoring.power_measurements AS m WHERE m.device_id = d.device_id)
FROM d WHERE d.device_id IS NOT NULL
"""

LOCAL_BUCKETS = f"""
SELECT m.device_id, date_bin('1 hour', m.time, timestamptz 'epoch'), count(*),
       sum({_ROW_HASH})::numeric
FROM monitoring.power_measurements AS m
WHERE m.device_id = ANY(%(devices)s::bigint[]) AND m.time >= %(from)s AND m.time < %(to)s
  AND {up_to("m")}
  AND {_NOT_QUARANTINED}
GROUP BY 1, 2
"""

HASH_PROBE_SQL = f"SELECT {HASH_SQL.format(time='%s::timestamptz', device='%s::bigint')}"

# LATERAL with OFFSET 0 (kept a subquery): one primary-key range scan per cell; a plain join is
# planned as a merge join on the device alone, reading every row of each device (~1 s a page
# on 50 meters x 10 days; this: ~20 ms).
_REPAIR_SELECTION = f"""
    FROM unnest(%(cell_devices)s::bigint[], %(cell_hours)s::timestamptz[]) AS c(device_id, hour)
    CROSS JOIN LATERAL (
        SELECT * FROM monitoring.power_measurements AS p
        WHERE p.device_id = c.device_id AND p.time >= c.hour
          AND p.time < c.hour + interval '1 hour'
          AND (p.device_id, p.time) > (%(after_device)s::bigint, %(after_time)s::timestamptz)
        OFFSET 0) AS m
    WHERE {up_to("m")}
      AND {_NOT_QUARANTINED}
    ORDER BY m.device_id, m.time
    LIMIT %(limit)s"""

READ_REPAIR_COLUMNS = f"""
SELECT count(*), coalesce(string_agg(b.record, ''::bytea ORDER BY b.k2, b.k3), ''::bytea)
FROM (SELECT m.push_xid AS k1, m.device_id AS k2, m.time AS k3, {RECORD_SQL} AS record
{_REPAIR_SELECTION}) AS b
"""

READ_REPAIR_JSON = f"""
WITH b AS MATERIALIZED (
    SELECT m.device_id, m.time, {carriable_sql("m.received_at")} AS ok,
           row_to_json(ROW({item_columns("m")})::app.fleet_push_item)::text AS item
    {_REPAIR_SELECTION}
)
SELECT (SELECT count(*) FROM b), (SELECT count(*) FROM b WHERE b.ok),
       convert_to('{{"items":[' || coalesce((SELECT string_agg(b.item, ',') FROM b WHERE b.ok), '')
                  || ']}}', 'UTF8'),
       l.device_id, l.time
FROM (SELECT 1) AS one
LEFT JOIN LATERAL (SELECT b.device_id, b.time FROM b
                   ORDER BY b.device_id DESC, b.time DESC LIMIT 1) AS l ON true
"""


async def hash_matches(conn: psycopg.AsyncConnection[Any]) -> bool:
    """This database computes the protocol's row hash (checked against the Python reference)."""
    device, time = HASH_PROBE
    async with conn.cursor(row_factory=tuple_row) as cur:
        await cur.execute(HASH_PROBE_SQL, (time, device))
        row = await cur.fetchone()
    return row is not None and int(row[0]) % 2**64 == row_hash(device, time)


async def read_devices_held(conn: psycopg.AsyncConnection[Any]) -> dict[int, datetime]:
    """Every device with measurement rows, and the time of its oldest row."""
    async with conn.cursor(row_factory=tuple_row) as cur:
        await cur.execute(DEVICES_HELD)
        return {int(row[0]): row[1] for row in await cur.fetchall()}


async def read_buckets(
    conn: psycopg.AsyncConnection[Any],
    devices: Sequence[int],
    start: datetime,
    end: datetime,
    cursor: PushCursor,
) -> AsyncIterator[tuple[int, datetime, CellDigest]]:
    """The digests of the gateway's rows at or behind `cursor`, not quarantined, per device
    and hour in [start, end), one (device, hour, digest) at a time (libpq's single-row mode):
    a 90-day horizon has tens of thousands, which the caller sums into arrays rather than
    holding them all as Python objects."""
    params = {**cursor_params(cursor), "devices": list(devices), "from": start, "to": end}
    async with conn.cursor(row_factory=tuple_row) as cur:
        async for device, hour, count, hash_sum in cur.stream(LOCAL_BUCKETS, params):
            yield int(device), hour, CellDigest(int(count), int(hash_sum) % 2**64)


@dataclass(frozen=True, slots=True)
class RepairPage:
    """One page of rows to re-send; `after` is the (device_id, time) key to read on from,
    None once the cells are exhausted."""

    batch: MeasurementBatch
    after: tuple[int, datetime] | None


async def read_repair_page(
    conn: psycopg.AsyncConnection[Any],
    cells: Sequence[tuple[int, datetime]],
    cursor: PushCursor,
    after: tuple[int, datetime] | None,
    limit: int,
    *,
    columnar: bool,
    build: BatchBuilder | None = None,
) -> RepairPage:
    """Up to `limit` rows of the (device, hour) `cells` after the key `after`, as a body (a
    columnar one made by `build`, `columnar_encoder("auto")` when not given)."""
    ordered = sorted(cells)
    if after is not None:  # only the cells not yet read: each page costs its own rows only
        hour = after[1].replace(minute=0, second=0, microsecond=0)
        ordered = [c for c in ordered if c >= (after[0], hour)]
    params = {
        **cursor_params(cursor),
        "cell_devices": [c[0] for c in ordered],
        "cell_hours": [c[1] for c in ordered],
        "after_device": after[0] if after else -1,
        "after_time": after[1] if after else "-infinity",
        "limit": limit,
    }
    start = PushCursor.start()
    async with conn.cursor(row_factory=tuple_row, binary=True) as cur:
        await cur.execute(READ_REPAIR_COLUMNS if columnar else READ_REPAIR_JSON, params)
        row = await cur.fetchone()
    assert row is not None
    if columnar:
        count, data = int(row[0]), bytes(row[1])
        batch = await asyncio.to_thread(build or columnar_encoder(), data, count, start, limit)
        last = (batch.end.device_id, batch.end.time) if count else None
    else:
        count, sent, body, device, time = row
        batch = MeasurementBatch(start, start, bytes(body), int(count), limit, None, None, sent)
        last = (int(device), time) if count else None
    return RepairPage(batch, last if count >= limit else None)
