"""Stored energy per device-hour: what makes a year of days a read of stored rows.

An hour's energy does not depend on the range it is read in (docs/ENERGY.md: each segment is
split over the hours it overlaps), only its `energy_estimated` flag does (the usual interval is
the range's); so the housekeeping stores, per device-hour with known energy (holes included),
the energy of the four registers, whether a reset touched it and the longest sample spacing it
rests on, in `fleet.energy_hours` (migration 0013), computed from the hourly summaries as
`fleet.energy_parts` computes it at read time (`ingestd.storage.segments`), for many devices in
one statement (`ingestd.storage.energy_sets`).

What is stored is kept equal to a from-scratch computation by the same recompute that keeps
the hourly aggregate (`storage.rollup`): the hours of the span a recomputed hour can move
(`fleet.revised_span`, the span the corrections feed records) are recomputed with it, in the
recompute's transaction on plain PostgreSQL, after the refresh on TimescaleDB. What a batch has
changed and no recompute has reached is read live:

    fleet.energy_frontier    per device: the hours before `stored_until` are stored
    fleet.energy_live_from(customer, device)
        the first hour not to take from the store: the nearest hour holding each register
        before the device's earliest marked hour or its frontier, whichever is first (a
        crossing segment from there may end in a changed hour)
    fleet.energy_between(customer, device, edges[], usual)
        energy between consecutive edges: stored hours inside an interval and before the live
        hour, summed; an hour holding an edge (local midnight at UTC+5:30) and everything from
        the live hour on computed by `fleet.energy_intervals`, as before there was a store

The frontier moves with the housekeeping, and the hours a recompute can move are stored again
in its transaction: `ingestd.storage.energy_upkeep`. This module makes the SQL functions of both
(the bootstrap runs `create_stored_energy_functions` after the read-time energy functions).
"""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection

from ingestd.storage.aggregate import COUNTER_COLUMNS
from ingestd.storage.energy_sets import (
    advance_energy_set,
    energy_steps,
    store_energy_set,
    store_spans_set,
)
from ingestd.storage.segments import (
    ESTIMATED_SPACING_FACTOR,
    FLAT_EDGES_FROM,
    INTERVAL_ENERGY,
    OF_DEVICE,
    plan_cached,
)

__all__ = [
    "STORED_ENERGY_FUNCTIONS",
    "create_stored_energy_functions",
    "energy_before",
    "stored_energy_functions",
    "usual_hours",
]

_EPOCH = "TIMESTAMPTZ '2000-01-01 00:00:00+00'"
_ENERGY = ("energy_imp_kwh", "energy_exp_kwh", "energy_q_imp_kvarh", "energy_q_exp_kvarh")
_OF = "n.customer_id = p_customer AND n.device_id = p_device"


def _holder_before(column: str, table: str) -> str:
    """The nearest hour before `p_at` holding the register of `column`: within a week first."""
    where = f"{_OF} AND n.bucket < p_at AND (n.{column}).last_time IS NOT NULL"
    return f"""coalesce(
        (SELECT n.bucket FROM {table} n
         WHERE {where} AND n.bucket >= p_at - INTERVAL '7 days' ORDER BY n.bucket DESC LIMIT 1),
        (SELECT n.bucket FROM {table} n WHERE {where} ORDER BY n.bucket DESC LIMIT 1))"""


def energy_before(table: str) -> str:
    """`fleet.energy_before`: the first hour whose energy a change at `p_at` or later can move,
    the nearest hour before it holding each register (`p_at` itself when none), looked up in
    the stored hours `table`: on plain PostgreSQL the rollup table (an hour still marked is
    missing there, which only moves the answer earlier: more is read live), whose index gives
    the nearest at once (the view's anti-join with the marks would read the whole history)."""
    holders = ", ".join(_holder_before(c, table) for c in COUNTER_COLUMNS)
    return f"""
CREATE OR REPLACE FUNCTION fleet.energy_before(
    p_customer bigint, p_device bigint, p_at timestamptz)
RETURNS timestamptz LANGUAGE sql STABLE SET jit = off AS $$
SELECT least(p_at, {holders})
$$
"""


# 'infinity' (plain PostgreSQL, nothing marked): every hour is stored.
ENERGY_LIVE_FROM = """
CREATE OR REPLACE FUNCTION fleet.energy_live_from(p_customer bigint, p_device bigint)
RETURNS timestamptz LANGUAGE sql STABLE SET jit = off AS $$
SELECT CASE WHEN e.at = 'infinity' THEN e.at
            ELSE fleet.energy_before(p_customer, p_device, e.at) END
FROM (SELECT least(
    coalesce((SELECT f.stored_until FROM fleet.energy_frontier f
              WHERE f.customer_id = p_customer AND f.device_id = p_device), '-infinity'),
    coalesce((SELECT min(d.bucket) FROM fleet.hourly_dirty d
              WHERE d.customer_id = p_customer AND d.device_id = p_device), 'infinity')) AS at) AS e
$$
"""

_SUMS = ", ".join(f"sum(e{k})" for k in range(1, 5))
_FROM_E = ", ".join(f"e.{c}" for c in _ENERGY)
_HEAD = """LANGUAGE plpgsql STABLE SET jit = off SET plan_cache_mode = force_generic_plan AS $$
#variable_conflict use_column"""

# Per interval: the stored hours inside it before the live hour, and everything from the live
# hour on computed. Edges inside an hour (local midnight at UTC+5:30): all computed, from the
# summaries (the quarter-hour ones of those hours), as before there was a store.
ENERGY_BETWEEN = f"""
CREATE OR REPLACE FUNCTION fleet.energy_between(
{INTERVAL_ENERGY}
{_HEAD}
DECLARE
    live timestamptz;
    first_edge timestamptz := p_edges[1];
    last_edge timestamptz := p_edges[cardinality(p_edges)];
BEGIN
IF EXISTS (SELECT 1 FROM unnest(p_edges) AS e WHERE date_bin(INTERVAL '1 hour', e, {_EPOCH}) <> e) THEN
    RETURN QUERY SELECT * FROM fleet.energy_intervals(p_customer, p_device, p_edges, p_usual_interval_s);
    RETURN;
END IF;
live := fleet.energy_live_from(p_customer, p_device);
RETURN QUERY
WITH parts AS (
    SELECT width_bucket(s.bucket, flat.e) AS j,
           {", ".join(f"s.{c} AS e{k}" for k, c in enumerate(_ENERGY, 1))},
           s.energy_reset AS reset,
           s.max_spacing_s > {ESTIMATED_SPACING_FACTOR} * p_usual_interval_s AS estimated
    FROM fleet.energy_hours s, {FLAT_EDGES_FROM}
    WHERE s.customer_id = p_customer AND s.device_id = p_device
      AND s.bucket >= first_edge AND s.bucket < least(last_edge, live)
      AND num_nonnulls({", ".join(f"s.{c}" for c in _ENERGY)}) > 0
    UNION ALL
    SELECT width_bucket(tail.edges[e.interval_no], p_edges), {_FROM_E},
           e.energy_reset, e.energy_estimated
    FROM (SELECT greatest(first_edge, live)
                 || ARRAY(SELECT x FROM unnest(p_edges) AS x WHERE x > greatest(first_edge, live)
                          ORDER BY x) AS edges
          WHERE live < last_edge) AS tail
    CROSS JOIN LATERAL fleet.energy_intervals(p_customer, p_device, tail.edges, p_usual_interval_s) AS e
)
SELECT j, {_SUMS}, coalesce(bool_or(reset), false), coalesce(bool_or(estimated), false)
FROM parts WHERE j >= 1 AND j < cardinality(p_edges)
GROUP BY j;
END
$$
"""

_FIRST_HOUR = f"date_bin(INTERVAL '1 hour', p_from, {_EPOCH})"


def _view_nearest(agg: str, op: str, bound: str, sign: str) -> str:
    """The nearest hour of the summaries before (`max`, `<`) or at/after (`min`, `>=`) `bound`:
    within a week first (a few hundred index entries), the whole history only when that finds
    nothing, as `ingestd.storage.segments.nearest`."""
    where = f"{_OF} AND n.bucket {op} {bound}"
    order = f"ORDER BY n.bucket {'DESC' if agg == 'max' else 'ASC'} LIMIT 1"
    return f"""coalesce(
        (SELECT n.bucket FROM fleet.hourly_per_device n
         WHERE {where} AND n.bucket {"<" if sign == "+" else ">="} {bound} {sign} INTERVAL '7 days'
         {order}),
        (SELECT n.bucket FROM fleet.hourly_per_device n WHERE {where} {order}))"""


_HOURS = "h.bucket, h.samples, h.first_time, h.last_time"
_STORED_OF = "s.customer_id = p_customer AND s.device_id = p_device AND s.samples > 0"

# The usual interval (docs/ENERGY.md, "The usual sampling interval"; rule in ingestd.storage.segments) from
# the stored hours' samples, first and last sample times before the live hour (narrow rows, no
# marks to merge), and from the hourly summaries from it on. The median of the hours' own mean
# spacings first (no order needed); the spacings between hours (a window over the hours in
# order) only when no hour has two samples: that window was half the function's time.
_STORED_RANGE = f"""SELECT s.bucket, s.samples, s.first_time, s.last_time FROM fleet.energy_hours s
    WHERE {_STORED_OF} AND s.bucket >= lo AND s.bucket < least(p_to, live)
    UNION ALL
    """
_USUAL_REST = f"""SELECT {_HOURS} FROM fleet.hourly_per_device h
    WHERE {OF_DEVICE} AND h.bucket >= greatest(lo, live) AND h.bucket < p_to
    UNION ALL
    (SELECT s.bucket, s.samples, s.first_time, s.last_time FROM fleet.energy_hours s
     WHERE {_STORED_OF} AND s.bucket < lo AND lo <= live ORDER BY s.bucket DESC LIMIT 1)
    UNION ALL
    SELECT {_HOURS} FROM fleet.hourly_per_device h
    WHERE {OF_DEVICE} AND lo > live AND h.bucket = {_view_nearest("max", "<", "lo", "-")}
    UNION ALL
    (SELECT * FROM (
        (SELECT s.bucket, s.samples, s.first_time, s.last_time FROM fleet.energy_hours s
         WHERE {_STORED_OF} AND s.bucket >= p_to AND s.bucket < live ORDER BY s.bucket LIMIT 1)
        UNION ALL
        SELECT {_HOURS} FROM fleet.hourly_per_device h
        WHERE {OF_DEVICE}
          AND h.bucket = {_view_nearest("min", ">=", "greatest(p_to, live)", "+")}) AS after
     ORDER BY 1 LIMIT 1)"""


def usual_hours(*, stored_range: bool = True) -> str:
    """The hours the usual interval of `p_device` is the median over (bucket, samples,
    first_time, last_time): those of [lo, p_to) — stored before `live`, from the summaries from
    it on — and the nearest non-empty hour on each side; without the stored ones of the range
    when the caller has them (`fleet.devices_energy`). `p_customer`, `p_device`, `lo`, `p_to`
    and `live` are names in scope (parameters, variables or columns of the caller)."""
    return f"{_STORED_RANGE if stored_range else ''}{_USUAL_REST}"


_USUAL_HOURS = f"hours AS (\n    {usual_hours()}\n)"
USUAL_INTERVAL = f"""
CREATE OR REPLACE FUNCTION fleet.usual_interval_s(
    p_customer bigint, p_device bigint, p_from timestamptz, p_to timestamptz)
RETURNS double precision
{_HEAD}
DECLARE
    live timestamptz := fleet.energy_live_from(p_customer, p_device);
    lo timestamptz := {_FIRST_HOUR};
    within double precision;
BEGIN
WITH {_USUAL_HOURS}
SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY
           date_part('epoch', last_time - first_time)::float8 / (samples - 1))
INTO within FROM hours WHERE samples > 1;
IF within IS NOT NULL THEN
    RETURN within;
END IF;
RETURN (
WITH {_USUAL_HOURS}, spacing AS (
    SELECT date_part('epoch', lead(first_time) OVER (ORDER BY bucket) - last_time)::float8 AS across
    FROM hours
)
SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY across) FROM spacing);
END
$$
"""


def energy_horizon(horizon: str) -> str:
    """`fleet.energy_horizon()`: the hour before which the store's summaries are complete (the
    frontiers stay at or before it); `horizon` an SQL expression."""
    return f"""
CREATE OR REPLACE FUNCTION fleet.energy_horizon()
RETURNS timestamptz LANGUAGE sql STABLE AS $$ SELECT {horizon} $$
"""


STORED_ENERGY_FUNCTIONS: tuple[str, ...] = (
    plan_cached(ENERGY_LIVE_FROM),
    ENERGY_BETWEEN,
    USUAL_INTERVAL,
)


def stored_energy_functions(
    stored_hours: str, *, horizon: str = "TIMESTAMPTZ 'infinity'",
    first_hours: str = "fleet.hourly_rollup, fleet.hourly_dirty",
) -> tuple[str, ...]:  # fmt: skip
    """The functions of the store; `stored_hours` where the nearest hours before a change and
    the summaries the recompute reads come from, complete before `horizon`; a new device's first
    hour, the earliest in the tables `first_hours` (comma-separated; each an index look-up).
    On plain PostgreSQL the rollup table and the marks (an hour not rolled up is marked), not
    the view: its earliest hour computed the marked hours' summaries from their raw rows first.

    On plain PostgreSQL the rollup table itself, not the view (`horizon` 'infinity'): an hour
    still marked is missing there, so the hours whose energy it moves are stored without it —
    and read live (the live hour is before the mark) until its recompute stores them again.
    The view's anti-join with the marks would read weeks of summaries for each nearest hour:
    3 x the recompute's cost.

    On TimescaleDB the continuous aggregate's materialized hypertable (`timescale_store`), with
    its watermark as `horizon`: below the watermark it is what the aggregate answers (a marked
    hour stale in both until refreshed), and the frontiers wait for the watermark. Read through
    the aggregate, every look-up went through its real-time union (the materialized rows and
    the raw rows above the watermark, aggregated): 0.2-0.28 s per device and hour's end."""
    return (
        plan_cached(energy_before(stored_hours)),
        store_energy_set(stored_hours),
        store_spans_set(stored_hours),
        energy_horizon(horizon),
        energy_steps(stored_hours, tuple(t.strip() for t in first_hours.split(","))),
        advance_energy_set(),
        *STORED_ENERGY_FUNCTIONS,
    )


async def create_stored_energy_functions(
    conn: AsyncConnection[Any], stored_hours: str, **where: str
) -> None:
    """(Re)create the functions of the store (after `create_energy_functions`); `where` as
    `stored_energy_functions`' keywords."""
    for statement in stored_energy_functions(stored_hours, **where):
        await conn.execute(statement)
