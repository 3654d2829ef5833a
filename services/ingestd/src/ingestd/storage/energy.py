"""Energy per hour and per local day from the hourly counter summaries, computed at read time.

The hourly aggregate (`fleet.hourly_per_device`, both storage paths) keeps, per device-hour and
register, the first and last sample carrying the register and the increase between them with
resets counted (`fleet.counter_summary`). Energy crosses hour boundaries: between the last sample
of one non-empty hour and the first of the next lies a *crossing segment* whose step (the
register's increase across it, or the new value after a drop) is split over the hours — or local
days — it spans, in proportion to time (linear interpolation of the register at the edges).
Nothing is extrapolated beyond a register's first or last sample, so over any range the sum of
the intervals' energy is the register's reset-adjusted increase between the range's edges.

The computation lives in SQL functions made by the bootstrap (both paths, same text) so that
Grafana and psql get the same numbers as the read API:

    fleet.usual_interval_s(customer, device, from, to)        the device's usual sampling interval
    fleet.energy_intervals(customer, device, edges[], usual)  energy between consecutive edges
    fleet.hourly_energy(customer, device, from, to)           hourly rows (holes included)
    fleet.daily_energy(customer, device, from, to, timezone)  local days (23/24/25 hours)
    fleet.hourly_energy_at(…, usual), fleet.daily_energy_at(…, usual)
        the same with the range's usual interval given: a range read in parts
    fleet.sampling_gaps(customer, device, from, to, min_gap_s) silences longer than min_gap_s
    fleet.device_completeness(customer, device, from, to)     samples received vs expected

Each runs with `jit = off`: their plans are cheap to run but estimated above jit_above_cost
(many small index lookups), and compiling them took longer than running them. They are PL/pgSQL
wrappers around one query each with `plan_cache_mode = force_generic_plan`, so a connection
plans them once (`plan_cached`): planning took longer than running for short ranges. How a register's increase is
split over intervals (crossing segments, quarter-hour edges) is `ingestd.storage.segments`. The rules and a
worked example are in docs/ENERGY.md; the tests check these functions against a
slow reference computed from the raw rows (tests/ingestd/energy_reference.py).
"""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection

from ingestd.storage.segments import (
    ENERGY_INTERVALS,
    ENERGY_PARTS,
    EPOCH,
    FROM_HOUR,
    OF_DEVICE,
    QUARTERS_AT,
    QUARTERS_OF_SPLIT,
    nearest,
    plan_cached,
    split_hours,
)

__all__ = ["ENERGY_FUNCTIONS", "GAP_FACTOR", "create_energy_functions"]

# The completeness report lists silences longer than this many usual intervals.
GAP_FACTOR = 3.0

_AVERAGES = ("p_total_avg", "v1_avg", "v2_avg", "v3_avg", "i1_avg", "i2_avg", "i3_avg",
             "pf_total_avg", "freq_avg")  # fmt: skip
_ENERGY_OUT = """energy_imp_kwh double precision, energy_exp_kwh double precision,
               energy_q_imp_kvarh double precision, energy_q_exp_kvarh double precision,
               energy_reset boolean, energy_estimated boolean, expected_samples double precision"""
_ENERGY_SELECT = """e.energy_imp_kwh, e.energy_exp_kwh, e.energy_q_imp_kvarh, e.energy_q_exp_kvarh,
       coalesce(e.energy_reset, false), coalesce(e.energy_estimated, false)"""


def _ceil_hour(moment: str) -> str:
    """The first whole hour at or after `moment` (an SQL expression)."""
    return f"(date_bin(INTERVAL '1 hour', {moment} - INTERVAL '1 microsecond', {EPOCH}) + INTERVAL '1 hour')"


_FIRST_HOUR = _ceil_hour("p_from")
_LAST_HOUR = _ceil_hour("p_to")

# Hours [ceil(from), to): every hour that has samples or whose energy is known (holes between
# two samples get rows with samples 0, null averages and interpolated energy). `_at`: with the
# usual interval given (the range's, `fleet.usual_interval_s` over [ceil(from), ceil(to))), so
# that a range's halves can be read apart, on two connections (`ingestd.handlers.energy`).
_HOURLY_OUT = f"""RETURNS TABLE (bucket timestamptz, samples bigint,
               p_total_avg double precision, p_total_min double precision, p_total_max double precision,
               {", ".join(f"{c} double precision" for c in _AVERAGES[1:])},
               {_ENERGY_OUT})"""
HOURLY_ENERGY_AT = f"""
CREATE OR REPLACE FUNCTION fleet.hourly_energy_at(
    p_customer bigint, p_device bigint, p_from timestamptz, p_to timestamptz,
    p_usual_interval_s double precision)
{_HOURLY_OUT}
LANGUAGE sql STABLE SET jit = off AS $$
WITH hours AS (
    SELECT array_agg(h ORDER BY h) AS edges
    FROM generate_series({_FIRST_HOUR}, {_LAST_HOUR}, INTERVAL '1 hour') AS h
), usual AS (
    SELECT p_usual_interval_s AS u FROM hours WHERE cardinality(edges) > 1
), energy AS (
    SELECT {_FIRST_HOUR} + (e.interval_no - 1) * INTERVAL '1 hour' AS bucket, e.*
    FROM usual, fleet.energy_between(p_customer, p_device, (SELECT edges FROM hours), usual.u) AS e
), stored AS (
    SELECT h.* FROM fleet.hourly_per_device h
    WHERE {OF_DEVICE} AND h.bucket >= {_FIRST_HOUR} AND h.bucket < {_LAST_HOUR}
)
SELECT coalesce(r.bucket, e.bucket), coalesce(r.samples, 0)::bigint,
       r.p_total_avg, r.p_total_min, r.p_total_max, {", ".join(f"r.{c}" for c in _AVERAGES[1:])},
       {_ENERGY_SELECT}, 3600 / usual.u
FROM usual, stored r FULL JOIN energy e ON r.bucket = e.bucket
ORDER BY 1
$$
"""
HOURLY_ENERGY = f"""
CREATE OR REPLACE FUNCTION fleet.hourly_energy(
    p_customer bigint, p_device bigint, p_from timestamptz, p_to timestamptz)
{_HOURLY_OUT}
LANGUAGE sql STABLE SET jit = off AS $$
SELECT * FROM fleet.hourly_energy_at(p_customer, p_device, p_from, p_to,
    fleet.usual_interval_s(p_customer, p_device, {_FIRST_HOUR}, {_LAST_HOUR}))
$$
"""

_WEIGHTED = ",\n       ".join(
    f"sum(h.{c} * h.samples) / nullif(sum(h.samples) FILTER (WHERE h.{c} IS NOT NULL), 0) AS {c}"
    for c in _AVERAGES[1:]
)

# Local days [from, to) in `timezone`: edges at local midnights, so DST days have 23 or 25 hours.
# Samples, minima, maxima and sample-weighted averages come from the hours starting in the day.
# `_at`: with the usual interval given (the range's, over its first to its last local midnight).
_DAILY_OUT = f"""RETURNS TABLE (day date, day_start timestamptz, day_end timestamptz, samples bigint,
               p_total_avg double precision, p_total_min double precision, p_total_max double precision,
               {", ".join(f"{c} double precision" for c in _AVERAGES[1:])},
               {_ENERGY_OUT})"""
DAILY_ENERGY_AT = f"""
CREATE OR REPLACE FUNCTION fleet.daily_energy_at(
    p_customer bigint, p_device bigint, p_from date, p_to date, p_timezone text,
    p_usual_interval_s double precision)
{_DAILY_OUT}
LANGUAGE sql STABLE SET jit = off AS $$
WITH days AS (
    SELECT array_agg(d::date ORDER BY d) AS dates,
           array_agg(d AT TIME ZONE p_timezone ORDER BY d) AS edges
    FROM generate_series(p_from::timestamp, p_to::timestamp, INTERVAL '1 day') AS d
), usual AS (
    SELECT p_usual_interval_s AS u FROM days WHERE cardinality(edges) > 1
), energy AS (
    SELECT e.* FROM days, usual, fleet.energy_between(p_customer, p_device, days.edges, usual.u) AS e
), {split_hours("(SELECT edges FROM days)")}, quarter_samples AS (
    SELECT width_bucket(q.bucket, days.edges) AS interval_no, sum(q.samples)::bigint AS split_samples
    FROM days, {QUARTERS_OF_SPLIT}
    WHERE q.bucket >= days.edges[1] AND q.bucket < days.edges[cardinality(days.edges)]
    GROUP BY 1
), stored AS (
    SELECT width_bucket(h.bucket, edges) AS interval_no,
       sum(h.samples) FILTER (WHERE NOT EXISTS (SELECT 1 FROM split WHERE split.hour = h.bucket))
           AS whole_samples,
       sum(h.p_total_avg * h.samples)
           / nullif(sum(h.samples) FILTER (WHERE h.p_total_avg IS NOT NULL), 0) AS p_total_avg,
       min(h.p_total_min) AS p_total_min, max(h.p_total_max) AS p_total_max,
       {_WEIGHTED}
    FROM days, fleet.hourly_per_device h
    WHERE {OF_DEVICE} AND h.bucket >= (p_from::timestamp AT TIME ZONE p_timezone)
      AND h.bucket < (p_to::timestamp AT TIME ZONE p_timezone)
    GROUP BY 1
)
SELECT days.dates[interval_no], days.edges[interval_no], days.edges[interval_no + 1],
       (coalesce(r.whole_samples, 0) + coalesce(qs.split_samples, 0))::bigint,
       r.p_total_avg, r.p_total_min, r.p_total_max, {", ".join(f"r.{c}" for c in _AVERAGES[1:])},
       {_ENERGY_SELECT},
       date_part('epoch', days.edges[interval_no + 1] - days.edges[interval_no])::float8 / usual.u
FROM days, usual,
     stored r FULL JOIN energy e USING (interval_no) FULL JOIN quarter_samples qs USING (interval_no)
-- an hour split at the day's start with no sample before it has started in the previous day
WHERE coalesce(r.whole_samples, 0) + coalesce(qs.split_samples, 0) > 0 OR e.energy_reset IS NOT NULL
ORDER BY 1
$$
"""
DAILY_ENERGY = f"""
CREATE OR REPLACE FUNCTION fleet.daily_energy(
    p_customer bigint, p_device bigint, p_from date, p_to date, p_timezone text)
{_DAILY_OUT}
LANGUAGE sql STABLE SET jit = off AS $$
SELECT * FROM fleet.daily_energy_at(p_customer, p_device, p_from, p_to, p_timezone,
    fleet.usual_interval_s(p_customer, p_device, p_from::timestamp AT TIME ZONE p_timezone,
                           p_to::timestamp AT TIME ZONE p_timezone))
$$
"""

# Silences longer than `min_gap_s` within [from, to): between consecutive non-empty hours
# (exact), the longest silence inside each hour (an hour with two long silences shows the
# longer), and since the last sample when nothing followed it (up to min(to, now)).
SAMPLING_GAPS = f"""
CREATE OR REPLACE FUNCTION fleet.sampling_gaps(
    p_customer bigint, p_device bigint, p_from timestamptz, p_to timestamptz,
    p_min_gap_s double precision)
RETURNS TABLE (gap_from timestamptz, gap_to timestamptz, ongoing boolean)
LANGUAGE sql STABLE SET jit = off AS $$
WITH span AS (
    SELECT make_interval(secs => p_min_gap_s) AS min_gap, least(p_to, now()) AS until
), hours AS (
    SELECT h.bucket, h.first_time, h.last_time, h.max_gap_start, h.max_gap_end
    FROM fleet.hourly_per_device h
    WHERE {OF_DEVICE} AND h.bucket >= {FROM_HOUR} AND h.bucket < p_to
    {nearest("h.bucket, h.first_time, h.last_time, h.max_gap_start, h.max_gap_end", "", FROM_HOUR, "p_to")}
), ordered AS (
    SELECT *, lead(first_time) OVER (ORDER BY bucket) AS next_time FROM hours
), gaps AS (
    SELECT max_gap_start AS a, max_gap_end AS b, false AS ongoing FROM span, ordered
    WHERE max_gap_end - max_gap_start > min_gap
    UNION ALL
    SELECT last_time, next_time, false FROM span, ordered
    WHERE next_time IS NOT NULL AND next_time - last_time > min_gap
    UNION ALL
    SELECT last_time, until, true FROM span, ordered
    WHERE next_time IS NULL AND until - last_time > min_gap
)
SELECT greatest(a, p_from), least(b, p_to), ongoing FROM span, gaps
WHERE b > p_from AND a < p_to ORDER BY 1
$$
"""

# Samples received in the hours of [from, to) against those expected at the usual interval
# from max(from, the device's first sample) to min(to, now).
DEVICE_COMPLETENESS = f"""
CREATE OR REPLACE FUNCTION fleet.device_completeness(
    p_customer bigint, p_device bigint, p_from timestamptz, p_to timestamptz)
RETURNS TABLE (usual_interval_s double precision, samples bigint,
               expected_samples double precision, first_sample timestamptz,
               last_sample timestamptz, last_sample_ever timestamptz)
LANGUAGE sql STABLE SET jit = off AS $$
WITH usual AS (
    SELECT fleet.usual_interval_s(p_customer, p_device, p_from, p_to) AS u
), got AS (
    SELECT coalesce(sum(h.samples), 0)::bigint AS n, min(h.first_time) AS first_sample,
           max(h.last_time) AS last_sample
    FROM fleet.hourly_per_device h
    WHERE {OF_DEVICE} AND h.bucket >= p_from AND h.bucket < p_to
), ever AS (
    SELECT (SELECT h.first_time FROM fleet.hourly_per_device h WHERE {OF_DEVICE}
            ORDER BY h.bucket LIMIT 1) AS first_ever,
           (SELECT h.last_time FROM fleet.hourly_per_device h WHERE {OF_DEVICE}
            ORDER BY h.bucket DESC LIMIT 1) AS last_ever
)
SELECT usual.u, got.n,
       greatest(date_part('epoch', least(p_to, now()) - greatest(p_from, ever.first_ever))::float8, 0)
           / usual.u,
       got.first_sample, got.last_sample, ever.last_ever
FROM usual, got, ever
$$
"""

ENERGY_FUNCTIONS: tuple[str, ...] = tuple(
    plan_cached(statement)
    for statement in (
        QUARTERS_AT,
        ENERGY_PARTS,
        ENERGY_INTERVALS,
        HOURLY_ENERGY_AT,
        HOURLY_ENERGY,
        DAILY_ENERGY_AT,
        DAILY_ENERGY,
        SAMPLING_GAPS,
        DEVICE_COMPLETENESS,
    )
)


async def create_energy_functions(conn: AsyncConnection[Any]) -> None:
    """(Re)create the read-time energy functions: they read `fleet.hourly_per_device`, so the
    bootstrap runs this after making it (both paths, same text)."""
    for statement in ENERGY_FUNCTIONS:
        await conn.execute(statement)
