"""A batch's audit row and its dead letters: `fleet.ingest_events` (with the customer's last-seen
mark and hourly counters, as CTEs of the statement that writes the batch — `writes` for a small
measurement batch, `full_sets` for sites and devices — or alone, `record_event`) and
`fleet.rejected_rows` (every refused row, verbatim, with its reason)."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from fleetcore import BatchType, Rejection
from psycopg import AsyncConnection

__all__ = [
    "COPY_REJECTIONS",
    "RECORD_EVENT",
    "AuditRecord",
    "audit_ctes",
    "event_params",
    "record_event",
    "store_rejections",
]

COPY_REJECTIONS = "COPY fleet.rejected_rows (customer_id, batch_id, batch_type, row_index, reason, payload) FROM STDIN"


def audit_ctes(accepted: str, duplicates: str) -> str:
    """The audit row, the customer's last-seen mark and its hourly counters, as CTEs of one
    statement (one round trip instead of three); `accepted`/`duplicates` are SQL expressions.
    With `seen` false (a refused batch) only the audit row is written."""
    return f"""event AS (
    INSERT INTO fleet.ingest_events (batch_id, customer_id, batch_type, accepted, duplicates,
        rejected, wire_bytes, body_bytes, client_cursor, min_time, max_time, duration_ms, outcome,
        status, error, repair)
    VALUES (%(batch_id)s, %(customer_id)s, %(batch_type)s, {accepted}, {duplicates}, %(rejected)s,
        %(wire_bytes)s, %(body_bytes)s, %(client_cursor)s, %(min_time)s, %(max_time)s,
        %(duration_ms)s + 1000 * extract(epoch FROM clock_timestamp() - statement_timestamp()),
        %(outcome)s, %(status)s, %(error)s, %(repair)s)
), seen AS (
    UPDATE fleet.customers SET first_seen_at = coalesce(first_seen_at, now()), last_seen_at = now()
    WHERE id = %(customer_id)s AND %(seen)s
), counted AS (
    INSERT INTO fleet.customer_hourly_counts AS k (customer_id, hour, batches, accepted, rejected)
    SELECT %(customer_id)s, date_bin('1 hour', now(), timestamptz 'epoch'), 1,
           CASE WHEN %(batch_type)s = 'measurements' THEN {accepted} ELSE 0 END, %(rejected)s
    WHERE %(seen)s
    ON CONFLICT (customer_id, hour) DO UPDATE SET batches = k.batches + 1,
        accepted = k.accepted + EXCLUDED.accepted, rejected = k.rejected + EXCLUDED.rejected
)"""


RECORD_EVENT = f"WITH {audit_ctes('%(accepted)s', '%(duplicates)s')} SELECT 1"


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One `fleet.ingest_events` row."""

    batch_id: uuid.UUID
    customer_id: int
    batch_type: str
    wire_bytes: int
    duration_ms: float
    outcome: str
    status: int
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    body_bytes: int | None = None
    client_cursor: str | None = None
    min_time: datetime | None = None
    max_time: datetime | None = None
    error: str | None = None
    repair: bool = False  # re-sent by reconciliation (X-Push-Repair)


_AUDIT_FIELDS = tuple(f.name for f in dataclasses.fields(AuditRecord))


def event_params(event: AuditRecord, seen: bool) -> dict[str, Any]:
    params = {name: getattr(event, name) for name in _AUDIT_FIELDS}  # asdict deep-copies
    params["seen"] = seen
    return params


async def record_event(conn: AsyncConnection[Any], event: AuditRecord, *, seen: bool) -> None:
    """Write the batch's audit row; a successful batch also marks the customer as seen and counts
    in its hourly counters. One statement."""
    await conn.execute(RECORD_EVENT, event_params(event, seen))


async def store_rejections(
    conn: AsyncConnection[Any],
    customer_id: int,
    batch_id: uuid.UUID,
    batch_type: BatchType,
    rejections: Sequence[Rejection],
) -> None:
    """Keep every rejected row, verbatim, with its reason (the dead-letter table)."""
    if not rejections:
        return
    async with conn.cursor() as cur, cur.copy(COPY_REJECTIONS) as copy:
        for r in rejections:
            await copy.write_row(
                (customer_id, batch_id, batch_type.value, r.index, r.reason, r.payload)
            )
