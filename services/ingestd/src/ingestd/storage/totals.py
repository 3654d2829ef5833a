"""Energy of a set of devices (a site, a customer) per local hour, day or calendar month.

A total is the sum of its devices' energy in each interval, each device's computed with the
same edges and rules as `fleet.energy_between` (docs/ENERGY.md): so a site's month is the sum of
its devices' months and the increase of the site's summed register between the two midnights.
With it come how many devices were estimated, reset, or missing (nothing known of any of their
registers) in the interval, so that a total resting on a gap is visibly so.

    fleet.devices_energy(customer, devices[], edges[])   the summed intervals

The edges are made in SQL from PostgreSQL's own zone database: local midnights for days, local
midnights of the 1st for months, and for hours every 60 minutes from the first local midnight
(in Asia/Kolkata: 00:00-01:00 IST, the local clock's hours; 23 or 25 of them on a DST day).
"""

from __future__ import annotations

from datetime import date
from typing import Any

from psycopg import AsyncConnection

from ingestd.storage.segments import ESTIMATED_SPACING_FACTOR, FLAT_EDGES, plan_cached
from ingestd.storage.stored_energy import usual_hours

__all__ = [
    "RESOLUTIONS",
    "TOTAL_FIELDS",
    "create_totals_functions",
    "customer_devices",
    "merge_totals",
    "site_devices",
    "site_timezone",
    "site_timezones",
    "total_rows",
]

RESOLUTIONS = ("hour", "day", "month")

_ENERGY = ("energy_imp_kwh", "energy_exp_kwh", "energy_q_imp_kvarh", "energy_q_exp_kvarh")

_SUMS = ", ".join(f"sum(s.{e}) AS {e}" for e in _ENERGY)
_EPOCH = "TIMESTAMPTZ '2000-01-01 00:00:00+00'"
_LAST = "p_edges[cardinality(p_edges)]"

# One statement for all the devices, not a function call each: a device whose range is stored
# whole (edges on whole hours and stored up to the last edge: every device of a past range) is
# read straight from its stored hours: its energy per interval (sums, reset, longest spacing;
# a hash aggregate) and its usual interval (the median of the hours' own spacings with the
# nearest hour on each side, `usual_hours`; `fleet.usual_interval_s` when no hour has two
# samples) in two passes over its hours' covering key (migration 0014);
# an interval is estimated where its longest spacing exceeds 1.5 usual intervals: the same rows
# and rules as `fleet.usual_interval_s` and `fleet.energy_between`, which compute the other
# devices (tests/ingestd/test_stored_energy.py compares both). A 50-device year: about half
# the CPU of 50 calls of each. Over the heap one pass grouped both ways (GROUPING SETS) was
# ~13 % cheaper than two; over the covering key two are ~17 % cheaper than that one (whose
# sort by interval, and a median per interval computed and thrown away, cost more than the
# second pass).
_MEAN_SPACING = (
    "CASE WHEN {a}.samples > 1 THEN date_part('epoch', {a}.last_time - {a}.first_time)"
    "::float8 / ({a}.samples - 1) END"
)
_STORED_OF = (
    f"s.customer_id = p_customer AND s.device_id = v.p_device AND s.bucket >= p_edges[1] "
    f"AND s.bucket < {_LAST}"
)
DEVICES_ENERGY = f"""
CREATE OR REPLACE FUNCTION fleet.devices_energy(
    p_customer bigint, p_devices bigint[], p_edges timestamptz[])
RETURNS TABLE (interval_no integer,
               {", ".join(f"{e} double precision" for e in _ENERGY)},
               devices_estimated integer, devices_reset integer, devices_missing integer)
LANGUAGE sql STABLE SET jit = off AS $$
WITH dev AS (
    SELECT d.id, fleet.energy_live_from(p_customer, d.id) AS live FROM unnest(p_devices) AS d(id)
), whole AS MATERIALIZED (
    SELECT dev.id, dev.live FROM dev
    WHERE dev.live >= {_LAST} AND NOT EXISTS (
        SELECT 1 FROM unnest(p_edges) AS e WHERE date_bin(INTERVAL '1 hour', e, {_EPOCH}) <> e)
), stored AS MATERIALIZED (
    -- per device: a row per interval with energy (whole_range false) and one for the range
    SELECT v.p_device AS id, g.*
    FROM (SELECT whole.id AS p_device, whole.live, p_edges[1] AS lo, {_LAST} AS p_to
          FROM whole) AS v
    CROSS JOIN LATERAL (
        SELECT false AS whole_range, r.j,
               {", ".join(f"sum(r.{e}) AS {e}" for e in _ENERGY)},
               bool_or(r.energy_reset) AS energy_reset, max(r.max_spacing_s) AS max_spacing_s,
               true AS has_energy, NULL::float8 AS within
        FROM (
            SELECT width_bucket(s.bucket, {FLAT_EDGES}) AS j, {", ".join(f"s.{e}" for e in _ENERGY)},
                   s.energy_reset, s.max_spacing_s
            FROM fleet.energy_hours s
            WHERE {_STORED_OF} AND num_nonnulls({", ".join(f"s.{e}" for e in _ENERGY)}) > 0
        ) AS r
        GROUP BY r.j
        UNION ALL
        SELECT true, NULL, NULL, NULL, NULL, NULL, NULL, NULL, false,
               percentile_cont(0.5) WITHIN GROUP (ORDER BY r.spacing)
        FROM (
            SELECT {_MEAN_SPACING.format(a="s")} FROM fleet.energy_hours s WHERE {_STORED_OF}
            UNION ALL
            SELECT {_MEAN_SPACING.format(a="n")} FROM ({usual_hours(stored_range=False)}) AS n
        ) AS r(spacing)) AS g
), usual AS MATERIALIZED (
    SELECT s.id, coalesce(s.within, fleet.usual_interval_s(p_customer, s.id, p_edges[1], {_LAST})) AS u
    FROM stored s WHERE s.whole_range
), per_device AS (
    SELECT s.j AS interval_no, {", ".join(f"s.{e}" for e in _ENERGY)}, s.energy_reset,
           coalesce(s.max_spacing_s > {ESTIMATED_SPACING_FACTOR} * u.u, false) AS energy_estimated
    FROM stored s JOIN usual u USING (id)
    WHERE NOT s.whole_range AND s.has_energy
    UNION ALL
    SELECT e.interval_no, {", ".join(f"e.{c}" for c in _ENERGY)}, e.energy_reset, e.energy_estimated
    FROM dev CROSS JOIN LATERAL fleet.usual_interval_s(
        p_customer, dev.id, p_edges[1], {_LAST}) AS usual(u)
    CROSS JOIN LATERAL fleet.energy_between(p_customer, dev.id, p_edges, usual.u) AS e
    WHERE NOT EXISTS (SELECT 1 FROM whole WHERE whole.id = dev.id)
), per_interval AS (
    SELECT interval_no AS j, {", ".join(f"sum({e}) AS {e}" for e in _ENERGY)},
           count(*) FILTER (WHERE energy_estimated)::integer AS estimated,
           count(*) FILTER (WHERE energy_reset)::integer AS reset,
           count(*) FILTER (WHERE coalesce({", ".join(_ENERGY)}) IS NOT NULL)::integer AS known
    FROM per_device GROUP BY interval_no
)
SELECT j, {", ".join(f"p.{e}" for e in _ENERGY)}, coalesce(p.estimated, 0), coalesce(p.reset, 0),
       cardinality(p_devices) - coalesce(p.known, 0)
FROM generate_series(1, cardinality(p_edges) - 1) AS j LEFT JOIN per_interval p USING (j)
ORDER BY j
$$
"""

TOTALS_FUNCTIONS: tuple[str, ...] = (plan_cached(DEVICES_ENERGY),)

# Local hours, days or months [from, to) in `tz` and the devices' summed energy in each.
TOTALS = f"""
WITH grid AS (
    SELECT CASE WHEN %(resolution)s = 'hour'
                THEN ARRAY(SELECT generate_series(%(from)s::timestamp AT TIME ZONE %(tz)s,
                                                  (%(to)s::timestamp AT TIME ZONE %(tz)s)
                                                      - INTERVAL '1 microsecond',
                                                  INTERVAL '1 hour'))
                     || (%(to)s::timestamp AT TIME ZONE %(tz)s)
                ELSE ARRAY(SELECT d AT TIME ZONE %(tz)s
                           FROM generate_series(%(from)s::timestamp, %(to)s::timestamp,
                                                CASE WHEN %(resolution)s = 'month'
                                                     THEN INTERVAL '1 month'
                                                     ELSE INTERVAL '1 day' END) AS d
                           ORDER BY d) END AS edges
)
SELECT grid.edges[t.interval_no], grid.edges[t.interval_no + 1],
       (grid.edges[t.interval_no] AT TIME ZONE %(tz)s),
       {", ".join(f"t.{e}" for e in _ENERGY)},
       t.devices_estimated, t.devices_reset, t.devices_missing
FROM grid, fleet.devices_energy(%(customer)s, %(devices)s, grid.edges) AS t
ORDER BY t.interval_no
"""
TOTAL_FIELDS = (
    "start", "end", "local_start", *_ENERGY, "devices_estimated", "devices_reset",
    "devices_missing",
)  # fmt: skip
"""The columns of `TOTALS`, in order (`local_start`: a timestamp without zone)."""

SITE = "SELECT timezone FROM fleet.sites WHERE customer_id = %s AND id = %s"
SITE_DEVICES = "SELECT id FROM fleet.devices WHERE customer_id = %s AND site_id = %s ORDER BY id"
CUSTOMER_DEVICES = "SELECT id FROM fleet.devices WHERE customer_id = %s ORDER BY id"
SITE_TIMEZONES = """SELECT DISTINCT timezone FROM fleet.sites
                    WHERE customer_id = %s AND deleted_at IS NULL ORDER BY 1"""


async def create_totals_functions(conn: AsyncConnection[Any]) -> None:
    """(Re)create `fleet.devices_energy` (after the energy functions, which it calls)."""
    for statement in TOTALS_FUNCTIONS:
        await conn.execute(statement)


async def _column(conn: AsyncConnection[Any], query: str, params: tuple[Any, ...]) -> list[Any]:
    cur = await conn.execute(query, params)
    return [row[0] for row in await cur.fetchall()]


async def site_timezone(conn: AsyncConnection[Any], customer: int, site: int) -> str | None:
    """The site's time zone, or None when the customer has no such site."""
    found = await _column(conn, SITE, (customer, site))
    return str(found[0]) if found else None


async def site_devices(conn: AsyncConnection[Any], customer: int, site: int) -> list[int]:
    """The devices of the site (deleted ones too: their energy was used there), by id."""
    return [int(v) for v in await _column(conn, SITE_DEVICES, (customer, site))]


async def customer_devices(conn: AsyncConnection[Any], customer: int) -> list[int]:
    """Every device of the customer's devices full set (deleted ones too), by id."""
    return [int(v) for v in await _column(conn, CUSTOMER_DEVICES, (customer,))]


async def site_timezones(conn: AsyncConnection[Any], customer: int) -> list[str]:
    """The distinct time zones of the customer's sites (not deleted)."""
    return [str(v) for v in await _column(conn, SITE_TIMEZONES, (customer,))]


async def total_rows(
    conn: AsyncConnection[Any],
    customer: int,
    devices: list[int],
    resolution: str,
    first: date,
    end: date,
    tz: str,
) -> list[tuple[Any, ...]]:
    """`TOTAL_FIELDS` per local hour, day or month of [first, end) (dates; for months the 1st)."""
    params = {"customer": customer, "devices": devices, "resolution": resolution,
              "from": first, "to": end, "tz": tz}  # fmt: skip
    cur = await conn.execute(TOTALS, params)
    return list(await cur.fetchall())


def _add(a: Any, b: Any) -> Any:
    """SQL's sum of two: NULL only when both are."""
    return b if a is None else a if b is None else a + b


def merge_totals(parts: list[list[tuple[Any, ...]]]) -> list[tuple[Any, ...]]:
    """`total_rows` of disjoint sets of devices over the same intervals, as one set's: the energy
    summed (NULL where every part's is), the devices estimated, reset and missing added."""
    merged = [list(row) for row in parts[0]]
    for part in parts[1:]:
        if len(part) != len(merged):
            raise ValueError("totals of different intervals")
        for row, other in zip(merged, part, strict=True):
            row[3:] = [_add(a, b) for a, b in zip(row[3:], other[3:], strict=True)]
    return [tuple(row) for row in merged]
