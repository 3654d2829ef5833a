"""Retention of the operational tables: the audit trail and the dead letters stop growing.

`fleet.ingest_events` (one row per delivery) keeps INGESTD_AUDIT_RETENTION_DAYS and
`fleet.rejected_rows` INGESTD_REJECTED_RETENTION_DAYS; the per-customer hourly counters behind
the customers endpoint keep two days; the corrections feed's revisions (`fleet.energy_revisions`,
few: one row per device and back-fill) keep INGESTD_AUDIT_RETENTION_DAYS, like the audit trail. Old rows are deleted in batches of `batch` rows, each in its
own short transaction (autocommit), found through the BRIN index on `received_at` (migration
0005): no statement holds more than a batch's row locks, ingest never waits on a table lock, and
a round's work is bounded (`max_batches`); what is left waits for the next round.

Why batched deletes and not daily partitions dropped whole: measured with `bench/retention.py`
(see docs/CAPACITY.md) a batch of 5,000 deletes costs a few tens of ms, so a fleet of 10,000
gateways (~43 M audit rows a day, ~500 rows/s) needs well under 1 % of a core for it, without
changing the tables' keys (a partitioned table's primary and unique keys must include the
partition column, which `batch_id`'s uniqueness does not).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from psycopg import AsyncConnection

__all__ = ["RetentionReport", "apply_retention"]

COUNTS_KEPT = timedelta(days=2)

_DELETE_BEFORE = {
    "ingest_events": """DELETE FROM fleet.ingest_events WHERE id = ANY(ARRAY(
        SELECT id FROM fleet.ingest_events WHERE received_at < %s LIMIT %s))""",
    "rejected_rows": """DELETE FROM fleet.rejected_rows WHERE id = ANY(ARRAY(
        SELECT id FROM fleet.rejected_rows WHERE received_at < %s LIMIT %s))""",
}
DELETE_OLD_COUNTS = "DELETE FROM fleet.customer_hourly_counts WHERE hour < %s"
DELETE_OLD_REVISIONS = "DELETE FROM fleet.energy_revisions WHERE revised_at < %s"


@dataclass(frozen=True, slots=True)
class RetentionReport:
    ingest_events: int
    rejected_rows: int

    @property
    def total(self) -> int:
        return self.ingest_events + self.rejected_rows


async def _delete_before(
    conn: AsyncConnection[Any], table: str, cutoff: datetime, batch: int, max_batches: int
) -> int:
    deleted = 0
    for _ in range(max_batches):
        cur = await conn.execute(_DELETE_BEFORE[table], (cutoff, batch))
        deleted += max(cur.rowcount, 0)
        if cur.rowcount < batch:
            break
    return deleted


async def apply_retention(
    conn: AsyncConnection[Any],
    now: datetime,
    *,
    audit_days: int,
    rejected_days: int,
    batch: int = 5000,
    max_batches: int = 20,
) -> RetentionReport:
    """Delete what is past retention, at most `batch * max_batches` rows per table; `conn` must be
    in autocommit mode so that every batch commits (and releases its locks) on its own."""
    await conn.execute(DELETE_OLD_COUNTS, (now - COUNTS_KEPT,))
    await conn.execute(DELETE_OLD_REVISIONS, (now - timedelta(days=audit_days),))
    return RetentionReport(
        await _delete_before(
            conn, "ingest_events", now - timedelta(days=audit_days), batch, max_batches
        ),
        await _delete_before(
            conn, "rejected_rows", now - timedelta(days=rejected_days), batch, max_batches
        ),
    )
