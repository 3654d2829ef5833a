"""What the meters' data says about the meters: the inputs of their states (`ingestd.fleetstate`).

Read from the hourly aggregate (`fleet.hourly_per_device`, whose `*_counter` columns summarize
each register per hour), never from the raw rows, so a fleet-wide pass reads a few index entries
per device:

- the last sample and the usual sampling interval over the day before it;
- frozen: the import (export) register flat from the first sample of the hour before the latest
  hour to the last sample, over at least `frozen_window`, while p_total stayed above
  `frozen_min_kw` (below minus it) — power flowing, register not counting;
- implausible: in the last day of a device's data, a register step (within an hour, or from one
  hour's last sample to the next hour's first) larger than `rated_kw` x the time it took
  (at least a second).

The stored states (`fleet.device_states`) are what the housekeeping last derived, for the
dashboard and the fleet view.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row

__all__ = [
    "customer_slice",
    "device_state_counts",
    "meter_rows",
    "stored_device_states",
    "write_device_states",
]

_OF_DEVICE = "r.customer_id = d.customer_id AND r.device_id = d.id"
_FLAT = "(w.{r}_last = w.{r}_first AND w.{r}_resets = 0)"

METERS = f"""
SELECT d.customer_id, d.id AS device_id, d.name, c.code AS customer, c.last_seen_at AS customer_seen_at,
       last.last_time AS last_sample_at,
       fleet.usual_interval_s(d.customer_id, d.id, last.last_time - INTERVAL '1 day',
                              last.last_time + INTERVAL '1 second') AS usual_interval_s,
       coalesce(w.last_time - w.first_time >= %(frozen_window)s AND (
           (w.p_min > %(frozen_min_kw)s AND {_FLAT.format(r="imp")})
           OR (w.p_max < -%(frozen_min_kw)s AND {_FLAT.format(r="exp")})), false) AS frozen,
       coalesce(steps.implausible, false) AS implausible
FROM fleet.devices d
JOIN fleet.customers c ON c.id = d.customer_id
LEFT JOIN LATERAL (
    SELECT r.bucket, r.last_time FROM fleet.hourly_per_device r
    WHERE {_OF_DEVICE} ORDER BY r.bucket DESC LIMIT 1
) last ON true
LEFT JOIN LATERAL (
    SELECT min(r.first_time) AS first_time, max(r.last_time) AS last_time,
           min(r.p_total_min) AS p_min, max(r.p_total_max) AS p_max,
           (array_agg((r.energy_imp_kwh_counter).first_value ORDER BY r.bucket))[1] AS imp_first,
           (array_agg((r.energy_imp_kwh_counter).last_value ORDER BY r.bucket DESC))[1] AS imp_last,
           sum((r.energy_imp_kwh_counter).resets) AS imp_resets,
           (array_agg((r.energy_exp_kwh_counter).first_value ORDER BY r.bucket))[1] AS exp_first,
           (array_agg((r.energy_exp_kwh_counter).last_value ORDER BY r.bucket DESC))[1] AS exp_last,
           sum((r.energy_exp_kwh_counter).resets) AS exp_resets
    FROM fleet.hourly_per_device r
    WHERE {_OF_DEVICE} AND r.bucket >= last.bucket - INTERVAL '1 hour'
) w ON true
LEFT JOIN LATERAL (
    SELECT bool_or(
        (s.c).increase > %(rated_kw)s
            * greatest(date_part('epoch', (s.c).last_time - (s.c).first_time), 1) / 3600
        OR (s.c).first_value - s.prev_value > %(rated_kw)s
            * greatest(date_part('epoch', (s.c).first_time - s.prev_time), 1) / 3600
    ) AS implausible
    FROM (
        SELECT k.c, lag((k.c).last_value) OVER w AS prev_value,
               lag((k.c).last_time) OVER w AS prev_time
        FROM fleet.hourly_per_device r
        CROSS JOIN LATERAL (VALUES (1, r.energy_imp_kwh_counter), (2, r.energy_exp_kwh_counter))
            AS k(register, c)
        WHERE {_OF_DEVICE} AND r.bucket >= last.bucket - INTERVAL '1 day'
          AND (k.c).first_time IS NOT NULL
        WINDOW w AS (PARTITION BY k.register ORDER BY r.bucket)
    ) s
) steps ON true
WHERE d.deleted_at IS NULL AND (%(customer)s::bigint IS NULL OR d.customer_id = %(customer)s)
  AND d.customer_id BETWEEN %(first_customer)s AND %(last_customer)s
ORDER BY d.customer_id, d.id
"""
# The next `count` customers after the id `after`: (first id, last id, how many).
CUSTOMER_SLICE = """
SELECT min(id), max(id), count(*) FROM (
    SELECT id FROM fleet.customers WHERE id > %s ORDER BY id LIMIT %s) s
"""

WRITE_STATES = """
INSERT INTO fleet.device_states AS s (customer_id, device_id, state)
SELECT * FROM unnest(%s::bigint[], %s::bigint[], %s::text[])
ON CONFLICT (customer_id, device_id) DO UPDATE SET
    state = EXCLUDED.state, checked_at = now(),
    since = CASE WHEN s.state = EXCLUDED.state THEN s.since ELSE now() END
"""
DELETE_GONE = """
DELETE FROM fleet.device_states s WHERE NOT EXISTS (
    SELECT 1 FROM fleet.devices d
    WHERE d.customer_id = s.customer_id AND d.id = s.device_id AND d.deleted_at IS NULL)
"""
STORED = """
SELECT s.customer_id, s.device_id, s.state, s.since FROM fleet.device_states s
WHERE (%(customer)s::bigint IS NULL OR s.customer_id = %(customer)s) AND s.state <> 'ok'
ORDER BY s.customer_id, s.device_id
"""
COUNTS = "SELECT state, count(*) FROM fleet.device_states GROUP BY state"


async def meter_rows(
    conn: AsyncConnection[Any],
    *,
    customer: int | None,
    frozen_min_kw: float,
    rated_kw: float,
    frozen_window: timedelta = timedelta(hours=1),
    customers: tuple[int, int] | None = None,
) -> list[dict[str, Any]]:
    """Per live device (of `customer` when given, of the customer ids in the inclusive range
    `customers` when given): customer_id, device_id, name, customer (code), customer_seen_at (its
    last batch), last_sample_at, usual_interval_s, frozen, implausible; by customer id, device id."""
    first, last = customers if customers is not None else (-(2**63), 2**63 - 1)
    params = {
        "first_customer": first,
        "last_customer": last,
        "customer": customer,
        "frozen_min_kw": frozen_min_kw,
        "rated_kw": rated_kw,
        "frozen_window": frozen_window,
    }
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(METERS, params)
        return list(await cur.fetchall())


async def customer_slice(
    conn: AsyncConnection[Any], after: int, count: int
) -> tuple[int, int, int]:
    """The ids of the next `count` customers after `after`: (first, last, how many; 0 past the
    last customer)."""
    cur = await conn.execute(CUSTOMER_SLICE, (after, count))
    row = await cur.fetchone()
    if row is None or not row[2]:
        return 0, 0, 0
    return int(row[0]), int(row[1]), int(row[2])


async def write_device_states(
    conn: AsyncConnection[Any], states: Sequence[tuple[int, int, str]]
) -> None:
    """Store (customer id, device id, state) for every live device; forget deleted devices."""
    if states:
        customers, devices, names = zip(*states, strict=True)
        await conn.execute(WRITE_STATES, (list(customers), list(devices), list(names)))
    await conn.execute(DELETE_GONE)


async def stored_device_states(
    conn: AsyncConnection[Any], customer: int | None = None
) -> list[tuple[Any, ...]]:
    """customer_id, device_id, state, since of the devices whose stored state is not `ok`."""
    cur = await conn.execute(STORED, {"customer": customer})
    return list(await cur.fetchall())


async def device_state_counts(conn: AsyncConnection[Any]) -> dict[str, int]:
    cur = await conn.execute(COUNTS)
    return {str(state): int(n) for state, n in await cur.fetchall()}
