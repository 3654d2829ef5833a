"""Peak demand: the highest average power over fixed 15, 30 or 60-minute intervals, per day or
month, of a device or of a site's summed import register (docs/ENERGY.md, "Peak demand").

The intervals start at each local midnight and follow the local clock (a 60-minute interval in
Asia/Kolkata runs 01:00-02:00 IST, 19:30-20:30 UTC); a day's last interval ends at the next
midnight. An interval's demand is its import energy (`energy_imp_kwh`, the register
interpolated at both edges, the rules of docs/ENERGY.md) divided by its length. Every edge is a
quarter hour, so the energy comes exactly from the quarter-hour summaries
(`ingestd.storage.quarters`). A site's demand in an interval is the sum of its devices' energy
in that interval divided by its length: the demand of the site's summed register, not a sum of
the devices' peaks, which may fall in different intervals.

    fleet.import_intervals(customer, device, edges[], usual)   import energy between edges
    fleet.demand_intervals(customer, devices[], from, to, timezone, minutes)
                                                         every interval of the local days
"""

from __future__ import annotations

from datetime import date
from typing import Any

from psycopg import AsyncConnection

from ingestd.storage.segments import (
    ESTIMATED_SPACING_FACTOR,
    OF_DEVICE,
    SEGMENT_PIPELINE,
    nearest,
    plan_cached,
)

__all__ = [
    "DEMAND_FIELDS",
    "DEMAND_FUNCTIONS",
    "DEMAND_MINUTES",
    "create_demand_functions",
    "peak_demand_rows",
]

DEMAND_MINUTES = (15, 30, 60)
"""The interval lengths a demand can be asked for, in minutes."""

_EPOCH = "TIMESTAMPTZ '2000-01-01 00:00:00+00'"
_FIRST_QUARTER = f"date_bin(INTERVAL '15 minutes', p_edges[1], {_EPOCH})"
_EDGES_END = "p_edges[cardinality(p_edges)]"
_IMPORT = "h.energy_imp_kwh_counter"

IMPORT_INTERVALS = f"""
CREATE OR REPLACE FUNCTION fleet.import_intervals(
    p_customer bigint, p_device bigint, p_edges timestamptz[], p_usual_interval_s double precision)
RETURNS TABLE (interval_no integer, energy_imp_kwh double precision,
               energy_reset boolean, energy_estimated boolean)
LANGUAGE sql STABLE SET jit = off AS $$
WITH summaries AS (
    SELECT h.bucket, 1 AS k, {_IMPORT} AS c FROM fleet.quarter_per_device h
    WHERE {OF_DEVICE} AND h.bucket >= {_FIRST_QUARTER} AND h.bucket < {_EDGES_END}
      AND ({_IMPORT}).last_time IS NOT NULL
    {
    nearest(
        f"h.bucket, 1, {_IMPORT}",
        f"AND ({_IMPORT}).last_time IS NOT NULL",
        _FIRST_QUARTER,
        _EDGES_END,
        "fleet.quarter_per_device",
    )
}
), {SEGMENT_PIPELINE}
SELECT j, sum(energy),
       coalesce(bool_or(reset) FILTER (WHERE overlapping), false),
       coalesce(bool_or(spacing_s > {ESTIMATED_SPACING_FACTOR} * p_usual_interval_s)
                FILTER (WHERE overlapping), false)
FROM pieces WHERE overlapping OR holds_sample
GROUP BY j
$$
"""

# Every interval of the local days [from, to): for each, the devices' summed import energy and
# how many of them were estimated, reset, or not known there (missing).
DEMAND_INTERVALS = """
CREATE OR REPLACE FUNCTION fleet.demand_intervals(
    p_customer bigint, p_devices bigint[], p_from date, p_to date, p_timezone text,
    p_minutes integer)
RETURNS TABLE (day date, interval_start timestamptz, interval_end timestamptz,
               energy_kwh double precision, devices_estimated integer, devices_reset integer,
               devices_missing integer)
LANGUAGE sql STABLE SET jit = off AS $$
WITH starts AS (
    SELECT d::date AS day, s AS interval_start
    FROM generate_series(p_from::timestamp, p_to::timestamp - INTERVAL '1 day', INTERVAL '1 day') AS d,
         generate_series(d AT TIME ZONE p_timezone,
                         (d + INTERVAL '1 day') AT TIME ZONE p_timezone - INTERVAL '1 microsecond',
                         make_interval(mins => p_minutes)) AS s
), numbered AS (
    SELECT row_number() OVER (ORDER BY interval_start)::integer AS interval_no, starts.*
    FROM starts
), grid AS (
    SELECT array_agg(interval_start ORDER BY interval_start)
           || (p_to::timestamp AT TIME ZONE p_timezone) AS edges
    FROM starts
), per_device AS (
    SELECT e.* FROM grid, unnest(p_devices) AS dev(id)
    CROSS JOIN LATERAL fleet.usual_interval_s(
        p_customer, dev.id, grid.edges[1], grid.edges[cardinality(grid.edges)]) AS usual(u)
    CROSS JOIN LATERAL fleet.import_intervals(p_customer, dev.id, grid.edges, usual.u) AS e
), per_interval AS (
    SELECT interval_no, sum(energy_imp_kwh) AS energy_kwh,
           count(*) FILTER (WHERE energy_estimated)::integer AS estimated,
           count(*) FILTER (WHERE energy_reset)::integer AS reset,
           count(energy_imp_kwh)::integer AS known
    FROM per_device GROUP BY interval_no
)
SELECT n.day, n.interval_start, grid.edges[n.interval_no + 1], p.energy_kwh,
       coalesce(p.estimated, 0), coalesce(p.reset, 0),
       cardinality(p_devices) - coalesce(p.known, 0)
FROM grid, numbered n LEFT JOIN per_interval p USING (interval_no)
ORDER BY n.interval_no
$$
"""

DEMAND_FUNCTIONS: tuple[str, ...] = tuple(
    plan_cached(statement) for statement in (IMPORT_INTERVALS, DEMAND_INTERVALS)
)

# The highest-demand interval per day or per calendar month (`period` is the day or the month's
# first day); ties go to the earliest interval. A period where no device's energy is known has
# a row with null demand.
PEAK_DEMAND = """
SELECT DISTINCT ON (period) period, interval_start, interval_end,
       energy_kwh / (date_part('epoch', interval_end - interval_start)::float8 / 3600) AS demand_kw,
       energy_kwh, devices_estimated, devices_reset, devices_missing
FROM (SELECT CASE WHEN %(monthly)s THEN date_trunc('month', day)::date ELSE day END AS period, i.*
      FROM fleet.demand_intervals(%(customer)s, %(devices)s, %(from)s, %(to)s, %(tz)s, %(minutes)s) i
     ) AS i
ORDER BY period, demand_kw DESC NULLS LAST, interval_start
"""
DEMAND_FIELDS = (
    "period", "interval_start", "interval_end", "demand_kw", "energy_kwh", "devices_estimated",
    "devices_reset", "devices_missing",
)  # fmt: skip
"""The columns of `PEAK_DEMAND`, in order."""


async def create_demand_functions(conn: AsyncConnection[Any]) -> None:
    """(Re)create the demand functions (after the energy functions, which they call)."""
    for statement in DEMAND_FUNCTIONS:
        await conn.execute(statement)


async def peak_demand_rows(
    conn: AsyncConnection[Any],
    customer: int,
    devices: list[int],
    first: date,
    end: date,
    tz: str,
    minutes: int,
    *,
    monthly: bool,
) -> list[tuple[Any, ...]]:
    """`DEMAND_FIELDS` per local day (or calendar month) of first <= day < end: the interval of
    the highest summed demand of `devices`."""
    params = {"customer": customer, "devices": devices, "from": first, "to": end, "tz": tz,
              "minutes": minutes, "monthly": monthly}  # fmt: skip
    cur = await conn.execute(PEAK_DEMAND, params)
    return list(await cur.fetchall())
