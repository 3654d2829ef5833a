"""The pusher's per-resource state (`app.fleet_push_state`) and its quarantine.

The cursor is written only after ingestd answered 2xx, in the same statement as the rest of the
success bookkeeping, so a crash at any moment leaves either the old cursor (the batch is sent
again: harmless, ingest is idempotent) or the new one.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from fleetcore import PushCursor
from psycopg.rows import dict_row

from pusher.errors import SourceError

__all__ = [
    "Resource",
    "ResourceState",
    "load_states",
    "quarantine_row",
    "record_failure",
    "record_success",
    "reset_cursor",
]


class Resource(enum.StrEnum):
    SITES = "sites"
    DEVICES = "devices"
    MEASUREMENTS = "measurements"


ENSURE_STATE = """
INSERT INTO app.fleet_push_state (resource, batch_size) VALUES (%(resource)s, %(batch_size)s)
ON CONFLICT (resource) DO NOTHING
"""

LOAD_STATES = "SELECT * FROM app.fleet_push_state ORDER BY resource"

RECORD_SUCCESS = """
UPDATE app.fleet_push_state
SET cursor = coalesce(%(cursor)s, cursor),
    batch_size = %(batch_size)s,
    consecutive_failures = 0,
    next_attempt_at = NULL,
    last_status = %(status)s,
    last_success_at = now(),
    shipped_rows = shipped_rows + %(rows)s,
    newest_shipped_received_at = greatest(newest_shipped_received_at, %(newest)s),
    updated_at = now()
WHERE resource = %(resource)s
"""

RECORD_FAILURE = """
UPDATE app.fleet_push_state
SET batch_size = %(batch_size)s,
    consecutive_failures = consecutive_failures + %(increment)s,
    next_attempt_at = now() + make_interval(secs => %(delay_s)s),
    last_status = %(status)s,
    last_error = %(error)s,
    last_error_at = now(),
    updated_at = now()
WHERE resource = %(resource)s
"""

RESET_CURSOR = """
UPDATE app.fleet_push_state SET cursor = %(cursor)s, updated_at = now()
WHERE resource = %(resource)s
"""

QUARANTINE = """
INSERT INTO app.fleet_push_quarantine (resource, device_id, time, push_xid, payload, reason)
VALUES (%(resource)s, %(device_id)s, %(time)s, %(xid)s::xid8, %(payload)s, %(reason)s)
"""


@dataclass(frozen=True, slots=True)
class ResourceState:
    resource: Resource
    cursor: PushCursor
    batch_size: int
    consecutive_failures: int
    next_attempt_at: datetime | None
    last_status: int | None
    last_error: str | None
    last_error_at: datetime | None
    last_success_at: datetime | None
    shipped_rows: int
    newest_shipped_received_at: datetime | None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> ResourceState:
        cursor = PushCursor.decode(row["cursor"]) if row["cursor"] else PushCursor.start()
        return cls(
            resource=Resource(row["resource"]),
            cursor=cursor,
            batch_size=row["batch_size"],
            consecutive_failures=row["consecutive_failures"],
            next_attempt_at=row["next_attempt_at"],
            last_status=row["last_status"],
            last_error=row["last_error"],
            last_error_at=row["last_error_at"],
            last_success_at=row["last_success_at"],
            shipped_rows=row["shipped_rows"],
            newest_shipped_received_at=row["newest_shipped_received_at"],
        )


async def load_states(
    conn: psycopg.AsyncConnection[Any], batch_size: int | None = None
) -> dict[Resource, ResourceState]:
    """Every resource's state; with `batch_size`, first create missing rows with it."""
    try:
        if batch_size is not None:
            for resource in Resource:
                await conn.execute(
                    ENSURE_STATE, {"resource": resource.value, "batch_size": batch_size}
                )
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(LOAD_STATES)
            rows = await cur.fetchall()
    except psycopg.errors.UndefinedTable as exc:
        raise SourceError("the customer database is not migrated: run `pusher migrate`") from exc
    return {state.resource: state for state in map(ResourceState.from_row, rows)}


async def record_success(
    conn: psycopg.AsyncConnection[Any],
    resource: Resource,
    *,
    cursor: PushCursor | None,
    batch_size: int,
    status: int,
    rows: int,
    newest_received_at: datetime | None,
) -> None:
    await conn.execute(
        RECORD_SUCCESS,
        {
            "resource": resource.value,
            "cursor": cursor.encode() if cursor is not None else None,
            "batch_size": batch_size,
            "status": status,
            "rows": rows,
            "newest": newest_received_at,
        },
    )


async def record_failure(
    conn: psycopg.AsyncConnection[Any],
    resource: Resource,
    *,
    batch_size: int,
    delay_s: float,
    status: int | None,
    error: str,
    counts_as_failure: bool = True,
) -> None:
    await conn.execute(
        RECORD_FAILURE,
        {
            "resource": resource.value,
            "batch_size": batch_size,
            "increment": 1 if counts_as_failure else 0,
            "delay_s": delay_s,
            "status": status,
            "error": error[:2000],
        },
    )


async def reset_cursor(
    conn: psycopg.AsyncConnection[Any], resource: Resource, cursor: PushCursor
) -> None:
    await conn.execute(RESET_CURSOR, {"resource": resource.value, "cursor": cursor.encode()})


async def quarantine_row(
    conn: psycopg.AsyncConnection[Any],
    *,
    row_cursor: PushCursor,
    payload: str,
    reason: str,
    batch_size: int,
) -> None:
    """Keep a row ingestd refuses even alone, and move the cursor past it, atomically."""
    async with conn.transaction():
        await conn.execute(
            QUARANTINE,
            {
                "resource": Resource.MEASUREMENTS.value,
                "device_id": row_cursor.device_id,
                "time": row_cursor.time,
                "xid": str(row_cursor.xid),
                "payload": payload,
                "reason": reason[:2000],
            },
        )
        await record_success(
            conn,
            Resource.MEASUREMENTS,
            cursor=row_cursor,
            batch_size=batch_size,
            status=413,
            rows=0,
            newest_received_at=None,
        )
