"""Reconciliation's SQL on the central side: digests of what the centre holds, the database's
identity, and what the read API shows of each customer's reconciliation.

A digest request's cells are answered by one statement: the customer's rows of the listed
devices between the earliest cell start and the latest cell end are grouped into (device, hour)
buckets of (count, hash sum) — an index range scan of the primary key per device, pruned to the
partitions or chunks of that time, compressed chunks decompressed by TimescaleDB itself — and
each cell sums the buckets it covers. The row hash is `fleetcore.reconcile.HASH_SQL`, exactly
the pusher's.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from fleetcore.reconcile import HASH_PROBE, HASH_SQL, CellDigest, DigestRequest, row_hash
from psycopg import AsyncConnection

__all__ = [
    "DatabaseIdentity",
    "central_digests",
    "hash_matches",
    "read_identity",
    "reconciliation_summary",
    "record_digest_request",
]

_ROW_HASH = HASH_SQL.format(time="m.time", device="m.device_id")

CENTRAL_DIGESTS = f"""
WITH cells AS (
    SELECT c.idx, c.device_id, c.lo, c.hi
    FROM unnest(%(device)s::bigint[], %(lo)s::timestamptz[], %(hi)s::timestamptz[])
         WITH ORDINALITY AS c(device_id, lo, hi, idx)
), buckets AS (
    SELECT m.device_id, date_bin('1 hour', m.time, timestamptz 'epoch') AS hour,
           count(*) AS n, sum({_ROW_HASH}) AS h
    FROM fleet.power_measurements AS m
    WHERE m.customer_id = %(customer)s AND m.device_id = ANY(%(devices)s::bigint[])
      AND m.time >= %(from)s AND m.time < %(to)s
    GROUP BY 1, 2
)
SELECT c.idx, coalesce(sum(b.n), 0)::bigint, coalesce(sum(b.h), 0)::numeric
FROM cells AS c
LEFT JOIN buckets AS b
  ON b.hour >= c.lo AND b.hour < c.hi AND (c.device_id IS NULL OR b.device_id = c.device_id)
GROUP BY c.idx
ORDER BY c.idx
"""

STATEMENT_TIMEOUT = "SELECT set_config('statement_timeout', %s, true)"

HASH_PROBE_SQL = f"SELECT {HASH_SQL.format(time='%s::timestamptz', device='%s::bigint')}"

# The identity of the database a connection reached: the cluster (system identifier), its
# history (timeline: a promoted standby starts a new one) and this server's start (a restore
# from a backup, or any restart).
IDENTITY = """
SELECT s.system_identifier, c.timeline_id, pg_postmaster_start_time()
FROM pg_control_system() AS s, pg_control_checkpoint() AS c
"""

RECORD_DIGEST_REQUEST = """
INSERT INTO fleet.customer_reconciliation AS r (customer_id, last_digest_at, last_cells,
    last_differing, last_differing_at, digest_requests, cells_compared, cells_differing)
VALUES (%(customer)s, now(), %(cells)s, %(differing)s,
        CASE WHEN %(differing)s > 0 THEN now() END, 1, %(cells)s, %(differing)s)
ON CONFLICT (customer_id) DO UPDATE SET
    last_digest_at = now(), last_cells = EXCLUDED.last_cells,
    last_differing = EXCLUDED.last_differing,
    last_differing_at = coalesce(EXCLUDED.last_differing_at, r.last_differing_at),
    digest_requests = r.digest_requests + 1,
    cells_compared = r.cells_compared + EXCLUDED.cells_compared,
    cells_differing = r.cells_differing + EXCLUDED.cells_differing
"""

# The customer's digest totals and its repair batches still in the audit trail
# (INGESTD_AUDIT_RETENTION_DAYS), through the partial index on repair batches.
SUMMARY = """
SELECT r.last_digest_at, r.last_cells, r.last_differing, r.last_differing_at,
       r.digest_requests, r.cells_compared, r.cells_differing,
       e.batches, e.rows_sent, e.accepted, e.rejected, e.last_repair_at, e.first_repair_at
FROM (SELECT 1) AS one
LEFT JOIN fleet.customer_reconciliation AS r ON r.customer_id = %(customer)s
CROSS JOIN LATERAL (
    SELECT count(*) AS batches,
           coalesce(sum(i.accepted + i.duplicates + i.rejected), 0) AS rows_sent,
           coalesce(sum(i.accepted), 0) AS accepted, coalesce(sum(i.rejected), 0) AS rejected,
           max(i.received_at) AS last_repair_at, min(i.received_at) AS first_repair_at
    FROM fleet.ingest_events AS i
    WHERE i.customer_id = %(customer)s AND i.repair AND i.status = 200) AS e
"""


@dataclass(frozen=True, slots=True)
class DatabaseIdentity:
    """Which database answered: `<system identifier>.<timeline>.<server start, µs>`."""

    system_identifier: int
    timeline: int
    started_at: datetime

    def __str__(self) -> str:
        started_us = round(self.started_at.timestamp() * 1_000_000)
        return f"{self.system_identifier}.{self.timeline}.{started_us}"


async def read_identity(conn: AsyncConnection[Any]) -> DatabaseIdentity:
    cur = await conn.execute(IDENTITY)
    row = await cur.fetchone()
    assert row is not None
    return DatabaseIdentity(int(row[0]), int(row[1]), row[2])


async def hash_matches(conn: AsyncConnection[Any]) -> bool:
    """This database computes the protocol's row hash (checked against the Python reference)."""
    device, time = HASH_PROBE
    cur = await conn.execute(HASH_PROBE_SQL, (time, device))
    row = await cur.fetchone()
    return row is not None and int(row[0]) % 2**64 == row_hash(device, time)


async def central_digests(
    conn: AsyncConnection[Any], customer_id: int, request: DigestRequest, timeout_s: float
) -> list[CellDigest]:
    """The centre's digest of every cell of `request`, in its order; the query is cancelled
    after `timeout_s` (QueryCanceled; the limit holds to the end of the transaction)."""
    if not request.cells:
        return []
    await conn.execute(STATEMENT_TIMEOUT, (str(max(1, round(timeout_s * 1000))),))
    lows = [cell.start for cell in request.cells]
    highs = [cell.end for cell in request.cells]
    params = {
        "customer": customer_id,
        "devices": sorted(set(request.devices)),
        "device": [cell.device for cell in request.cells],
        "lo": lows,
        "hi": highs,
        "from": min(lows),
        "to": max(highs),
    }
    cur = await conn.execute(CENTRAL_DIGESTS, params)
    return [CellDigest(int(row[1]), int(row[2]) % 2**64) for row in await cur.fetchall()]


async def record_digest_request(
    conn: AsyncConnection[Any], customer_id: int, cells: int, differing: int
) -> None:
    await conn.execute(
        RECORD_DIGEST_REQUEST, {"customer": customer_id, "cells": cells, "differing": differing}
    )


async def reconciliation_summary(conn: AsyncConnection[Any], customer_id: int) -> dict[str, Any]:
    """What the read API shows of the customer's reconciliation (None where nothing happened)."""
    cur = await conn.execute(SUMMARY, {"customer": customer_id})
    row = await cur.fetchone()
    assert row is not None
    names = (
        "last_digest_at", "last_cells", "last_differing", "last_differing_at", "digest_requests",
        "cells_compared", "cells_differing", "repair_batches", "repair_rows_sent",
        "repair_rows_accepted", "repair_rows_rejected", "last_repair_at", "first_repair_at",
    )  # fmt: skip
    return dict(zip(names, row, strict=True))
