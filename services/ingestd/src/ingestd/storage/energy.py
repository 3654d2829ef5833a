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
plans them once (`plan_cached`): planning took longer than running for short ranges. The rules and a
worked example are in docs/ENERGY.md; the tests check these functions against a
slow reference computed from the raw rows (tests/ingestd/energy_reference.py).
"""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection

from ingestd.storage.aggregate import COUNTER_COLUMNS

__all__ = [
    "ENERGY_FUNCTIONS",
    "ESTIMATED_SPACING_FACTOR",
    "FLAT_EDGES",
    "FLAT_EDGES_FROM",
    "GAP_FACTOR",
    "OF_DEVICE",
    "SEGMENT_PIPELINE",
    "create_energy_functions",
    "energy_parts",
    "nearest",
    "plan_cached",
]

# An interval's energy is flagged estimated when it rests on a spacing between two samples of a
# register longer than this many usual intervals (one missed sample makes 2).
ESTIMATED_SPACING_FACTOR = 1.5
# The completeness report lists silences longer than this many usual intervals.
GAP_FACTOR = 3.0

_EPOCH = "TIMESTAMPTZ '2000-01-01 00:00:00+00'"
OF_DEVICE = "h.customer_id = p_customer AND h.device_id = p_device"


def nearest(
    columns: str, where: str, lo: str, hi: str, table: str = "fleet.hourly_per_device"
) -> str:
    """The nearest non-empty hour (bucket of `table`) before `lo` and the first at or after `hi`,
    however far.

    Looked up within a week first (a few hundred index entries), the whole history only when that
    finds nothing. `lo` and `hi` are expressions of the function's parameters, written into each
    condition (not taken from a CTE) so that they are index conditions; `where` is an extra
    condition on the alias `h`."""
    inner = where.replace("h.", "n.")

    def bucket(bound: str, agg: str, op: str, near: str) -> str:
        near_where = f"{OF_DEVICE.replace('h.', 'n.')} AND n.bucket {op} {bound} {inner}"
        # ORDER BY … LIMIT 1, not max()/min(): through the plain view's anti-join or the
        # continuous aggregate's union an aggregate reads every hour it may see (the whole
        # history for the second), an ordered index scan stops at the first
        order = "DESC" if agg == "max" else "ASC"
        return f"""coalesce(
            (SELECT n.bucket FROM {table} n
             WHERE {near_where} AND n.bucket {near} ORDER BY n.bucket {order} LIMIT 1),
            (SELECT n.bucket FROM {table} n WHERE {near_where} ORDER BY n.bucket {order} LIMIT 1))"""

    before = bucket(lo, "max", "<", f">= {lo} - INTERVAL '7 days'")
    after = bucket(hi, "min", ">=", f"< {hi} + INTERVAL '7 days'")
    return f"""
    UNION ALL (SELECT {columns} FROM {table} h
               WHERE {OF_DEVICE} AND h.bucket = {before})
    UNION ALL (SELECT {columns} FROM {table} h
               WHERE {OF_DEVICE} AND h.bucket = {after})"""


_FROM_HOUR = f"date_bin(INTERVAL '1 hour', p_from, {_EPOCH})"
_EDGES_HOUR = f"date_bin(INTERVAL '1 hour', p_edges[1], {_EPOCH})"
_EDGES_END = "p_edges[cardinality(p_edges)]"


# The usual interval, `fleet.usual_interval_s(customer, device, from, to)`: the median, over the
# device's non-empty hours from the hour holding `from` up to `to` plus the nearest non-empty hour
# on each side, of each hour's mean spacing (last - first) / (samples - 1); where no such hour has
# two samples, the median spacing between consecutive non-empty hours. NULL with a single sample.
# It reads the stored hours where it can: `ingestd.storage.stored_energy.USUAL_INTERVAL`.

_UNPIVOT = ", ".join(f"({k}, h.{c})" for k, c in enumerate(COUNTER_COLUMNS, 1))


def _neighbours(table: str) -> str:
    return "".join(
        nearest(f"h.bucket, {k}, h.{c}", f"AND (h.{c}).last_time IS NOT NULL", _EDGES_HOUR,
                _EDGES_END, table)
        for k, c in enumerate(COUNTER_COLUMNS, 1)
    )  # fmt: skip


# The hours holding an edge that is not a whole hour (local midnight at UTC+5:30, the start of a
# 15-minute demand interval): their quarter-hour summaries replace their hourly one, so that the
# register at the edge is interpolated from the samples around it (ingestd.storage.quarters).
def _split(edges: str) -> str:
    return f"""split AS (
    SELECT DISTINCT date_bin(INTERVAL '1 hour', e, {_EPOCH}) AS hour FROM unnest({edges}) AS e
    WHERE date_bin(INTERVAL '1 hour', e, {_EPOCH}) <> e
)"""


_SPLIT = _split("p_edges")
_QUARTERS_OF_SPLIT = """fleet.quarters_at(p_customer, p_device, ARRAY(
        SELECT split.hour + n * INTERVAL '15 minutes' FROM split, generate_series(0, 3) AS n)) AS q"""

# The quarter summaries of one device at the given quarter starts: a function of its own so that
# the buckets are one parameter, looked up by primary key in both branches of the plain path's
# view (a join on the split hours was not pushed into the view: each hour read all the device's
# quarters, 38 s for a year of Kolkata days).
QUARTERS_AT = f"""
CREATE OR REPLACE FUNCTION fleet.quarters_at(
    p_customer bigint, p_device bigint, p_buckets timestamptz[])
RETURNS TABLE (bucket timestamptz, samples bigint,
               {", ".join(f"{c} fleet.counter_summary" for c in COUNTER_COLUMNS)})
LANGUAGE sql STABLE SET jit = off AS $$
SELECT q.bucket, q.samples, {", ".join(f"q.{c}" for c in COUNTER_COLUMNS)}
FROM fleet.quarter_per_device q
WHERE q.customer_id = p_customer AND q.device_id = p_device AND q.bucket = ANY(p_buckets)
$$
"""
# `p_edges` as a plain array, made once per query, for what looks an edge up per row
# (width_bucket): PL/pgSQL keeps an array parameter in its expanded form, and width_bucket
# flattens that into a copy at every call — a year of days ~0.2 us a row, 93 days of hours
# (2,233 edges) ~1 us a row: a tenth of a 50-device year's time.
FLAT_EDGES = "(SELECT array_agg(f.x ORDER BY f.n) FROM unnest(p_edges) WITH ORDINALITY AS f(x, n))"
# The same as a FROM item `flat` (column `e`) made once however often the query uses it (an
# expression copied into each place that uses an output column was made as often).
FLAT_EDGES_FROM = f"(SELECT {FLAT_EDGES} AS e OFFSET 0) AS flat"

_PER_REGISTER = ",\n       ".join(f"sum(energy) FILTER (WHERE k = {k})" for k in range(1, 5))

# Segments per register `k` from `summaries` (bucket, k, c: a counter summary, in bucket order
# per register): each summary's own samples (first to last, carrying its increase) and the
# crossing to the next summary holding the register (carrying the step across it). A segment's
# amount is split over the intervals [p_edges[j], p_edges[j+1]) it overlaps, in proportion to
# time; a one-sample summary is a zero-length segment that only says the register was seen.
# Times are subtracted as timestamps (exact microseconds) before turning into seconds. Ends with
# `pieces` (k, j, reset, spacing_s, energy, overlapping, holds_sample).
SEGMENT_PIPELINE = f"""counters AS (
    SELECT k, (c).first_time, (c).first_value, (c).last_time, (c).last_value, (c).increase,
           (c).resets, (c).max_spacing_s,
           lead((c).first_time) OVER w AS next_time, lead((c).first_value) OVER w AS next_value
    FROM summaries WINDOW w AS (PARTITION BY k ORDER BY bucket)
), segments AS (
    SELECT k, first_time AS t0, last_time AS t1, increase AS amount, resets > 0 AS reset,
           max_spacing_s AS spacing_s
    FROM counters
    UNION ALL
    SELECT k, last_time, next_time,
           CASE WHEN next_value >= last_value THEN next_value - last_value
                ELSE greatest(next_value, 0) END,
           next_value < last_value, date_part('epoch', next_time - last_time)::float8
    FROM counters WHERE next_time IS NOT NULL
), placed AS (
    SELECT s.*, width_bucket(s.t0, flat.e) AS j0, width_bucket(s.t1, flat.e) AS j1
    FROM segments s, {FLAT_EDGES_FROM}
), pieces AS (
    -- A segment within one interval is wholly that interval's (most of them: with hour edges,
    -- every hour's own samples); only those crossing an edge are split.
    SELECT k, j0 AS j, reset, spacing_s, amount AS energy, t1 > t0 AS overlapping,
           t0 = t1 AS holds_sample
    FROM placed WHERE j0 = j1 AND j0 >= 1 AND j0 < cardinality(p_edges)
    UNION ALL
    SELECT k, j, reset, spacing_s,
           amount * date_part('epoch', least(t1, p_edges[j + 1]) - greatest(t0, p_edges[j]))::float8
           / date_part('epoch', t1 - t0)::float8,
           least(t1, p_edges[j + 1]) > greatest(t0, p_edges[j]), false
    FROM (SELECT p.*, generate_series(greatest(j0, 1), least(j1, cardinality(p_edges) - 1)) AS j
          FROM placed p WHERE j1 > j0) AS crossing
)"""


# Energy of the four registers between consecutive edges, with the longest spacing between two
# samples it rests on: the segments of the hourly summaries (quarter-hour ones in the hours
# holding an edge inside them) and of the nearest hour holding the register on each side. The
# housekeeping stores it per hour (ingestd.storage.stored_energy); reads compute with it what is
# not stored yet.
def energy_parts(function: str, table: str) -> str:
    """`function`: `ENERGY_PARTS` over the hourly summaries of `table` (the store's recompute
    reads the rollup table itself on plain PostgreSQL: `storage.stored_energy`)."""
    return f"""
CREATE OR REPLACE FUNCTION {function}(
    p_customer bigint, p_device bigint, p_edges timestamptz[])
RETURNS TABLE (interval_no integer,
               energy_imp_kwh double precision, energy_exp_kwh double precision,
               energy_q_imp_kvarh double precision, energy_q_exp_kvarh double precision,
               energy_reset boolean, max_spacing_s double precision)
LANGUAGE sql STABLE SET jit = off AS $$
WITH {_SPLIT}, summaries AS (
    SELECT h.bucket, r.k, r.c FROM {table} h
    CROSS JOIN LATERAL (VALUES {_UNPIVOT}) AS r(k, c)
    WHERE {OF_DEVICE} AND h.bucket >= {_EDGES_HOUR} AND h.bucket < {_EDGES_END}
      AND (r.c).last_time IS NOT NULL AND NOT EXISTS (SELECT 1 FROM split WHERE split.hour = h.bucket)
    UNION ALL
    SELECT q.bucket, r.k, r.c FROM {_QUARTERS_OF_SPLIT}
    CROSS JOIN LATERAL (VALUES {_UNPIVOT.replace("h.", "q.")}) AS r(k, c)
    WHERE (r.c).last_time IS NOT NULL
    {_neighbours(table)}
), {SEGMENT_PIPELINE}
SELECT j, {_PER_REGISTER},
       coalesce(bool_or(reset) FILTER (WHERE overlapping), false),
       max(spacing_s) FILTER (WHERE overlapping)
FROM pieces WHERE overlapping OR holds_sample
GROUP BY j
$$
"""


ENERGY_PARTS = energy_parts("fleet.energy_parts", "fleet.hourly_per_device")

# The same with `energy_estimated`: a spacing longer than 1.5 usual intervals.
ENERGY_INTERVALS = f"""
CREATE OR REPLACE FUNCTION fleet.energy_intervals(
    p_customer bigint, p_device bigint, p_edges timestamptz[], p_usual_interval_s double precision)
RETURNS TABLE (interval_no integer,
               energy_imp_kwh double precision, energy_exp_kwh double precision,
               energy_q_imp_kvarh double precision, energy_q_exp_kvarh double precision,
               energy_reset boolean, energy_estimated boolean)
LANGUAGE sql STABLE SET jit = off AS $$
SELECT p.interval_no, p.energy_imp_kwh, p.energy_exp_kwh, p.energy_q_imp_kvarh,
       p.energy_q_exp_kvarh, p.energy_reset,
       coalesce(p.max_spacing_s > {ESTIMATED_SPACING_FACTOR} * p_usual_interval_s, false)
FROM fleet.energy_parts(p_customer, p_device, p_edges) AS p
$$
"""

_AVERAGES = ("p_total_avg", "v1_avg", "v2_avg", "v3_avg", "i1_avg", "i2_avg", "i3_avg",
             "pf_total_avg", "freq_avg")  # fmt: skip
_ENERGY_OUT = """energy_imp_kwh double precision, energy_exp_kwh double precision,
               energy_q_imp_kvarh double precision, energy_q_exp_kvarh double precision,
               energy_reset boolean, energy_estimated boolean, expected_samples double precision"""
_ENERGY_SELECT = """e.energy_imp_kwh, e.energy_exp_kwh, e.energy_q_imp_kvarh, e.energy_q_exp_kvarh,
       coalesce(e.energy_reset, false), coalesce(e.energy_estimated, false)"""


def _ceil_hour(moment: str) -> str:
    """The first whole hour at or after `moment` (an SQL expression)."""
    return f"(date_bin(INTERVAL '1 hour', {moment} - INTERVAL '1 microsecond', {_EPOCH}) + INTERVAL '1 hour')"


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
), {_split("(SELECT edges FROM days)")}, quarter_samples AS (
    SELECT width_bucket(q.bucket, days.edges) AS interval_no, sum(q.samples)::bigint AS split_samples
    FROM days, {_QUARTERS_OF_SPLIT}
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
    WHERE {OF_DEVICE} AND h.bucket >= {_FROM_HOUR} AND h.bucket < p_to
    {nearest("h.bucket, h.first_time, h.last_time, h.max_gap_start, h.max_gap_end", "", _FROM_HOUR, "p_to")}
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

_SQL_HEAD = "LANGUAGE sql STABLE SET jit = off AS $$\n"
_PLPGSQL_HEAD = """LANGUAGE plpgsql STABLE SET jit = off SET plan_cache_mode = force_generic_plan AS $$
#variable_conflict use_column
BEGIN
"""


def plan_cached(statement: str) -> str:
    """The same query as a PL/pgSQL function with a generic plan, so that it is planned once per
    connection instead of at every call: a SQL function's query is planned anew at each call, and
    planning these (the hourly view expands to its rollup, dirty-hour and raw-row parts, several
    times per query) cost more than running them for short ranges. Output columns named like
    the query's columns refer to the columns (`use_column`)."""
    head = statement.index(_SQL_HEAD)
    body = statement[head + len(_SQL_HEAD) : statement.rindex("$$")].rstrip()
    returns_table = "RETURNS TABLE" in statement
    body = f"RETURN QUERY\n{body};\n" if returns_table else f"RETURN (\n{body});\n"
    return f"{statement[:head]}{_PLPGSQL_HEAD}{body}END\n$$\n"


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
