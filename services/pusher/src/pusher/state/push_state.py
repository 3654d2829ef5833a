"""The pusher's per-resource state (`app.fleet_push_state`) and its quarantine.

The cursor is written only after ingestd answered 2xx, in the same statement as the rest of the
success bookkeeping, so a crash at any moment leaves either the old cursor (the batch is sent
again: harmless, ingest is idempotent) or the new one.

`PushState` is the daemon's only copy: each of its methods runs one statement and takes the row
that statement returns as the new in-memory state, so the two cannot drift apart.
"""

from __future__ import annotations

from collections.abc import ItemsView
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import psycopg
from fleetcore import PushCursor
from fleetcore.protocol import BatchType, WireFormat
from psycopg.rows import dict_row, tuple_row

from pusher.errors import SourceError
from pusher.source.carriable import carriable_sql
from pusher.source.cursor import after, cursor_params, item_columns, up_to

__all__ = ["PushState", "ResourceState", "count_quarantined", "load_states"]


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
    sent_bytes = sent_bytes + %(sent_bytes)s,
    full_set_digest = coalesce(%(digest)s, full_set_digest),
    full_set_sent_at = CASE WHEN %(digest)s::bytea IS NULL THEN full_set_sent_at ELSE now() END,
    media_type = coalesce(%(media_type)s, media_type),
    updated_at = now()
WHERE resource = %(resource)s
RETURNING *
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
RETURNING *
"""

RESET_CURSOR = """
UPDATE app.fleet_push_state SET cursor = %(cursor)s, updated_at = now()
WHERE resource = %(resource)s
RETURNING *
"""

QUARANTINE = """
INSERT INTO app.fleet_push_quarantine (resource, device_id, time, push_xid, payload, reason)
VALUES (%(resource)s, %(device_id)s, %(time)s, %(xid)s::xid8, %(payload)s, %(reason)s)
"""

COUNT_QUARANTINE = "SELECT count(*) FROM app.fleet_push_quarantine"

# The rows a batch passes (after its start cursor, up to its end cursor) that the protocol
# cannot carry (`carriable.py`), kept with the reason in the transaction that moves the cursor.
QUARANTINE_PASSED = f"""
INSERT INTO app.fleet_push_quarantine (resource, device_id, time, push_xid, payload, reason)
SELECT 'measurements', m.device_id, m.time, m.push_xid,
       row_to_json(ROW({item_columns("m")})::app.fleet_push_item)::text,
       CASE WHEN NOT {carriable_sql("m.time")}
            THEN 'time ' || m.time::text || ' is outside what RFC 3339 carries (years 0001-9999)'
            ELSE 'received_at ' || m.received_at::text
                 || ' is outside what RFC 3339 carries (years 0001-9999)' END
FROM monitoring.power_measurements AS m
WHERE {after("m", "start_")}
  AND {up_to("m", "end_")}
  AND NOT {carriable_sql("m.time", "m.received_at")}
"""


def _wire_format(stored: str | None) -> WireFormat | None:
    """The stored body type as a format; one this version does not know (written by a newer
    one) as none: the next answer of ingestd says again."""
    try:
        return WireFormat(stored) if stored else None
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class ResourceState:
    resource: BatchType
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
    sent_bytes: int = 0
    full_set_digest: bytes | None = None
    full_set_sent_at: datetime | None = None
    media_type: WireFormat | None = None

    def full_set_current(self, digest: bytes, interval_s: float) -> bool:
        """The full set ingestd last accepted is this one, and was sent within the interval."""
        if self.full_set_digest != digest or self.full_set_sent_at is None:
            return False
        age_s = (datetime.now(UTC) - self.full_set_sent_at).total_seconds()
        return 0 <= age_s < interval_s

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> ResourceState:
        cursor = PushCursor.decode(row["cursor"]) if row["cursor"] else PushCursor.start()
        return cls(
            resource=BatchType(row["resource"]),
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
            sent_bytes=row["sent_bytes"],
            full_set_digest=row["full_set_digest"],
            full_set_sent_at=row["full_set_sent_at"],
            media_type=_wire_format(row["media_type"]),
        )


async def load_states(
    conn: psycopg.AsyncConnection[Any], batch_size: int | None = None
) -> dict[BatchType, ResourceState]:
    """Every resource's state; with `batch_size`, first create missing rows with it."""
    try:
        if batch_size is not None:
            for resource in BatchType:
                await conn.execute(
                    ENSURE_STATE, {"resource": resource.value, "batch_size": batch_size}
                )
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(LOAD_STATES)
            rows = await cur.fetchall()
    except psycopg.errors.UndefinedTable as exc:
        raise SourceError("the customer database is not migrated: run `pusher migrate`") from exc
    return {state.resource: state for state in map(ResourceState.from_row, rows)}


async def count_quarantined(conn: psycopg.AsyncConnection[Any]) -> int:
    """Rows kept locally because ingestd refused them even alone."""
    async with conn.cursor(row_factory=tuple_row) as cur:
        await cur.execute(COUNT_QUARANTINE)
        row = await cur.fetchone()
    return int(row[0]) if row else 0


class PushState:
    """Every resource's stored state, as the running daemon sees and changes it.

    The in-memory copy changes only through the methods below, each of which writes the row and
    takes back what the database stored; the one exception is `load`'s cap on the batch size,
    which is not written until the resource's next outcome (a smaller PUSHER_BATCH_SIZE applies at
    once, the stored size stays what it was until then)."""

    def __init__(self) -> None:
        self._states: dict[BatchType, ResourceState] = {}

    async def load(self, conn: psycopg.AsyncConnection[Any], batch_size: int) -> None:
        """Create missing rows, read them all, and cap each batch size at `batch_size` (at the
        start of every database session: the database is the truth)."""
        states = await load_states(conn, batch_size)
        self._states = {
            resource: replace(state, batch_size=min(state.batch_size, batch_size))
            for resource, state in states.items()
        }

    def __getitem__(self, resource: BatchType) -> ResourceState:
        return self._states[resource]

    def items(self) -> ItemsView[BatchType, ResourceState]:
        return self._states.items()

    async def _update(
        self, conn: psycopg.AsyncConnection[Any], query: str, params: dict[str, Any]
    ) -> ResourceState:
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(query, params)
            row = await cur.fetchone()
        if row is None:
            raise SourceError(f"the push state of {params['resource']} vanished from the database")
        state = ResourceState.from_row(row)
        self._states[state.resource] = state
        return state

    async def succeeded(
        self,
        conn: psycopg.AsyncConnection[Any],
        resource: BatchType,
        *,
        cursor: PushCursor | None,
        batch_size: int,
        status: int | None,
        rows: int,
        newest_received_at: datetime | None,
        passed_from: PushCursor | None = None,
        sent_bytes: int = 0,
        digest: bytes | None = None,
        media_type: WireFormat | None = None,
    ) -> ResourceState:
        """ingestd answered 2xx: move the cursor (None keeps it), count the rows and bytes, clear
        failures; a full set's `digest` is kept with the time it was accepted, and the body type
        (`media_type`) the batch was accepted in. With `passed_from` (the batch's start), the
        uncarriable rows between it and `cursor` are quarantined in the same transaction."""
        params = {
            "resource": resource.value,
            "cursor": cursor.encode() if cursor is not None else None,
            "batch_size": batch_size,
            "status": status,
            "rows": rows,
            "newest": newest_received_at,
            "sent_bytes": sent_bytes,
            "digest": digest,
            "media_type": media_type.value if media_type is not None else None,
        }
        if passed_from is None or cursor is None:
            return await self._update(conn, RECORD_SUCCESS, params)
        async with conn.transaction():
            await conn.execute(
                QUARANTINE_PASSED,
                {**cursor_params(passed_from, "start_"), **cursor_params(cursor, "end_")},
            )
            return await self._update(conn, RECORD_SUCCESS, params)

    async def failed(
        self,
        conn: psycopg.AsyncConnection[Any],
        resource: BatchType,
        *,
        batch_size: int,
        delay_s: float,
        status: int | None,
        error: str,
        counts_as_failure: bool = True,
    ) -> ResourceState:
        """Not delivered: keep the cursor, note the error and when to try again."""
        return await self._update(
            conn,
            RECORD_FAILURE,
            {
                "resource": resource.value,
                "batch_size": batch_size,
                "increment": 1 if counts_as_failure else 0,
                "delay_s": delay_s,
                "status": status,
                "error": error[:2000].replace("\x00", "?"),
            },
        )

    async def reset_cursor(
        self, conn: psycopg.AsyncConnection[Any], resource: BatchType, cursor: PushCursor
    ) -> ResourceState:
        """Move the cursor other than by shipping (a restored database)."""
        return await self._update(
            conn, RESET_CURSOR, {"resource": resource.value, "cursor": cursor.encode()}
        )

    async def quarantine(
        self,
        conn: psycopg.AsyncConnection[Any],
        *,
        row_cursor: PushCursor,
        payload: str,
        reason: str,
    ) -> ResourceState:
        """Keep a row ingestd refuses even alone, and move the cursor past it, atomically
        (the batch size stays at one row)."""
        async with conn.transaction():
            await conn.execute(
                QUARANTINE,
                {
                    **cursor_params(row_cursor),
                    "resource": BatchType.MEASUREMENTS.value,
                    "payload": payload,
                    "reason": reason[:2000].replace("\x00", "?"),
                },
            )
            return await self.succeeded(
                conn,
                BatchType.MEASUREMENTS,
                cursor=row_cursor,
                batch_size=1,
                status=413,
                rows=0,
                newest_received_at=None,
            )
