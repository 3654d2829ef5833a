"""Queries that only read: the push token lookup, readiness, and the operators' read API.

Each returns plain rows or values; turning them into HTTP answers is the handlers' job
(`ingestd.handlers`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from psycopg import AsyncConnection

__all__ = [
    "HOURLY_FIELDS",
    "applied_migrations",
    "customer_id",
    "customer_summaries",
    "devices_of",
    "hourly_rows",
    "sites_of",
]

APPLIED_MIGRATIONS = "SELECT migration_id FROM public._yoyo_migration"

# Per customer, from the hourly counters each batch updates (migration 0005): the current hour
# and the 24 before it, so the figure covers at least the last 24 hours (at most 25).
CUSTOMERS = """
SELECT c.code, c.name, c.created_at, c.first_seen_at, c.last_seen_at,
       extract(epoch FROM now() - c.last_seen_at)::double precision,
       coalesce(k.accepted, 0)::bigint, coalesce(k.rejected, 0)::bigint
FROM fleet.customers c
LEFT JOIN (
    SELECT customer_id, sum(accepted) AS accepted, sum(rejected) AS rejected
    FROM fleet.customer_hourly_counts
    WHERE hour >= date_bin('1 hour', now(), timestamptz 'epoch') - interval '24 hours'
    GROUP BY customer_id
) k ON k.customer_id = c.id
ORDER BY c.code
"""
CUSTOMER_ID = "SELECT id FROM fleet.customers WHERE code = %s"
SITES = """SELECT id, name, timezone, address, updated_at, deleted_at
           FROM fleet.sites WHERE customer_id = %s ORDER BY id"""
DEVICES = """SELECT id, site_id, serial_number, model, name, updated_at, deleted_at
             FROM fleet.devices WHERE customer_id = %s ORDER BY id"""
HOURLY = """
SELECT bucket, samples, p_total_avg, p_total_min, p_total_max, v1_avg, v2_avg, v3_avg,
       i1_avg, i2_avg, i3_avg, pf_total_avg, freq_avg, energy_imp_kwh, energy_exp_kwh
FROM fleet.hourly_per_device
WHERE customer_id = %s AND device_id = %s AND bucket >= %s AND bucket < %s
ORDER BY bucket
"""
HOURLY_FIELDS = (
    "bucket", "samples", "p_total_avg", "p_total_min", "p_total_max", "v1_avg", "v2_avg", "v3_avg",
    "i1_avg", "i2_avg", "i3_avg", "pf_total_avg", "freq_avg", "energy_imp_kwh", "energy_exp_kwh",
)  # fmt: skip
"""The columns of `HOURLY`, in order."""

Rows = list[tuple[Any, ...]]


async def _all(conn: AsyncConnection[Any], query: str, params: tuple[Any, ...] = ()) -> Rows:
    cur = await conn.execute(query, params)
    return list(await cur.fetchall())


async def applied_migrations(conn: AsyncConnection[Any]) -> set[str]:
    """Ids of the applied migrations (raises UndefinedTable before the first migration)."""
    return {row[0] for row in await _all(conn, APPLIED_MIGRATIONS)}


async def customer_id(conn: AsyncConnection[Any], code: str) -> int | None:
    cur = await conn.execute(CUSTOMER_ID, (code,))
    row = await cur.fetchone()
    return int(row[0]) if row is not None else None


async def customer_summaries(conn: AsyncConnection[Any]) -> Rows:
    """code, name, created_at, first_seen_at, last_seen_at, seconds since the last batch,
    measurement rows accepted and rows dead-lettered in the last 24 h; by code."""
    return await _all(conn, CUSTOMERS)


async def sites_of(conn: AsyncConnection[Any], customer: int) -> Rows:
    """id, name, timezone, address, updated_at, deleted_at; by id."""
    return await _all(conn, SITES, (customer,))


async def devices_of(conn: AsyncConnection[Any], customer: int) -> Rows:
    """id, site_id, serial_number, model, name, updated_at, deleted_at; by id."""
    return await _all(conn, DEVICES, (customer,))


async def hourly_rows(
    conn: AsyncConnection[Any], customer: int, device_id: int, start: datetime, end: datetime
) -> Rows:
    """The device's `HOURLY_FIELDS` rows with start <= bucket < end, by bucket."""
    return await _all(conn, HOURLY, (customer, device_id, start, end))
