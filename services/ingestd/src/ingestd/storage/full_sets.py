"""A full set of sites or devices, stored in one statement: the upsert of the rows that changed,
the soft delete of the ids absent from it (full-set semantics: whatever the customer no longer
sends is deleted) and the batch's audit row (`storage.audit`)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from fleetcore import BatchType, DeviceRow, SiteRow
from psycopg import AsyncConnection
from psycopg.pq import TransactionStatus

from ingestd.storage.audit import AuditRecord, audit_ctes, event_params
from ingestd.storage.writes import StoreResult

__all__ = ["STORE_DEVICES", "STORE_SITES", "store_full_set"]

_UPSERT_SITES = """
INSERT INTO fleet.sites AS s (customer_id, id, name, timezone, address, updated_at)
SELECT %(customer_id)s, * FROM unnest(
    %(id)s::bigint[], %(name)s::text[], %(timezone)s::text[], %(address)s::text[],
    %(updated_at)s::timestamptz[])
ON CONFLICT (customer_id, id) DO UPDATE SET
    name = EXCLUDED.name, timezone = EXCLUDED.timezone, address = EXCLUDED.address,
    updated_at = EXCLUDED.updated_at, received_at = now(), deleted_at = NULL
WHERE (s.name, s.timezone, s.address, s.updated_at, s.deleted_at)
      IS DISTINCT FROM (EXCLUDED.name, EXCLUDED.timezone, EXCLUDED.address, EXCLUDED.updated_at, NULL)
"""
_UPSERT_DEVICES = """
INSERT INTO fleet.devices AS d (customer_id, id, site_id, serial_number, model, name, updated_at)
SELECT %(customer_id)s, * FROM unnest(
    %(id)s::bigint[], %(site_id)s::bigint[], %(serial_number)s::text[], %(model)s::text[],
    %(name)s::text[], %(updated_at)s::timestamptz[])
ON CONFLICT (customer_id, id) DO UPDATE SET
    site_id = EXCLUDED.site_id, serial_number = EXCLUDED.serial_number, model = EXCLUDED.model,
    name = EXCLUDED.name, updated_at = EXCLUDED.updated_at, received_at = now(), deleted_at = NULL
WHERE (d.site_id, d.serial_number, d.model, d.name, d.updated_at, d.deleted_at)
      IS DISTINCT FROM (EXCLUDED.site_id, EXCLUDED.serial_number, EXCLUDED.model, EXCLUDED.name,
                        EXCLUDED.updated_at, NULL)
"""
# Full-set semantics: whatever the customer no longer sends is soft-deleted. The upsert touches
# the ids sent, the soft delete the ids not seen: no row is modified twice in the statement.
_MARK_DELETED = """UPDATE fleet.{table} SET deleted_at = now()
    WHERE customer_id = %(customer_id)s AND deleted_at IS NULL
      AND NOT (id = ANY(%(ids_seen)s::bigint[]))"""


def _full_set_statement(upsert: str, table: str) -> str:
    """A full set in one statement: the upsert (changed rows only), the soft delete of the ids
    absent from it, the audit row, last-seen and counters — one round trip in autocommit
    instead of a pipeline of three statements between BEGIN and COMMIT."""
    return f"""WITH upserted AS ({upsert}), deleted AS (
    {_MARK_DELETED.format(table=table)}
), {audit_ctes("%(accepted)s", "%(duplicates)s")}
SELECT 1"""


STORE_SITES = _full_set_statement(_UPSERT_SITES, "sites")
STORE_DEVICES = _full_set_statement(_UPSERT_DEVICES, "devices")


def _utc(moment: datetime) -> datetime:
    """RFC 3339 allows offsets up to ±23:59, PostgreSQL's text input only ±15:59: times that travel
    as text parameters go in UTC. (COPY sends binary timestamps, which carry no offset.)"""
    return moment.astimezone(UTC)


_FULL_SETS: dict[BatchType, tuple[str, tuple[str, ...]]] = {
    BatchType.SITES: (STORE_SITES, ("id", "name", "timezone", "address")),
    BatchType.DEVICES: (STORE_DEVICES, ("id", "site_id", "serial_number", "model", "name")),
}


async def _one_statement(conn: AsyncConnection[Any], query: str, params: dict[str, Any]) -> Any:
    """Run one statement: in autocommit when the connection is idle (one round trip, no BEGIN
    or COMMIT; the pool's connections are in autocommit already, others are switched for it),
    else inside the transaction already open (the caller commits)."""
    switch = not conn.autocommit and conn.info.transaction_status is TransactionStatus.IDLE
    if switch:
        await conn.set_autocommit(True)
    try:
        return await conn.execute(query, params)
    finally:
        if switch:
            await conn.set_autocommit(False)


async def store_full_set(
    conn: AsyncConnection[Any],
    kind: BatchType,
    rows: Sequence[SiteRow] | Sequence[DeviceRow],
    ids_seen: set[int],
    event: AuditRecord,
) -> StoreResult:
    """Upsert the full set of sites or devices, soft-delete the ones absent from it and write
    the audit row, in one statement (`_full_set_statement`)."""
    statement, columns = _FULL_SETS[kind]
    params = event_params(event, True)
    params.update({column: [getattr(r, column) for r in rows] for column in columns})
    params["updated_at"] = [_utc(r.updated_at) for r in rows]
    params["ids_seen"] = sorted(ids_seen)
    await _one_statement(conn, statement, params)
    return StoreResult(event.accepted, event.duplicates)
