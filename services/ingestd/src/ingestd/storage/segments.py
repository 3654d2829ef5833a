"""How a register's increase is split over intervals: the SQL that `ingestd.storage.energy`'s
functions, the stored energy (`storage.stored_energy`), the site and customer totals
(`storage.totals`) and the demand (`storage.demand`) are built from.

From a device's hourly counter summaries (quarter-hour ones in the hours holding an edge that is
not a whole hour, `storage.quarters`) and the nearest hour holding each register on each side,
the segments between samples: each summary's own (carrying its increase) and the crossing to the
next summary (carrying the step across it), each split over the intervals it overlaps in
proportion to time (docs/ENERGY.md):

    fleet.quarters_at(customer, device, buckets[])         quarter summaries at the given starts
    fleet.energy_parts(customer, device, edges[])          energy between consecutive edges, with
                                                           resets and the longest spacing
    fleet.energy_intervals(customer, device, edges[], usual)  the same, flagged estimated

`plan_cached` turns a SQL function's query into a PL/pgSQL one planned once per connection.
"""

from __future__ import annotations

from ingestd.storage.aggregate import COUNTER_COLUMNS

__all__ = [
    "ENERGY_INTERVALS",
    "ENERGY_PARTS",
    "EPOCH",
    "ESTIMATED_SPACING_FACTOR",
    "FLAT_EDGES",
    "FLAT_EDGES_FROM",
    "FROM_HOUR",
    "INTERVAL_ENERGY",
    "OF_DEVICE",
    "QUARTERS_AT",
    "QUARTERS_OF_SPLIT",
    "SEGMENT_PIPELINE",
    "energy_parts",
    "nearest",
    "plan_cached",
    "split_hours",
]

# An interval's energy is flagged estimated when it rests on a spacing between two samples of a
# register longer than this many usual intervals (one missed sample makes 2).
ESTIMATED_SPACING_FACTOR = 1.5

EPOCH = "TIMESTAMPTZ '2000-01-01 00:00:00+00'"
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


FROM_HOUR = f"date_bin(INTERVAL '1 hour', p_from, {EPOCH})"
_EDGES_HOUR = f"date_bin(INTERVAL '1 hour', p_edges[1], {EPOCH})"
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
def split_hours(edges: str) -> str:
    """The CTE `split`: the hours of `edges` holding an edge that is not a whole hour."""
    return f"""split AS (
    SELECT DISTINCT date_bin(INTERVAL '1 hour', e, {EPOCH}) AS hour FROM unnest({edges}) AS e
    WHERE date_bin(INTERVAL '1 hour', e, {EPOCH}) <> e
)"""


_SPLIT = split_hours("p_edges")
QUARTERS_OF_SPLIT = """fleet.quarters_at(p_customer, p_device, ARRAY(
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
    SELECT q.bucket, r.k, r.c FROM {QUARTERS_OF_SPLIT}
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

# The parameters and rows of a function giving energy between consecutive edges, flagged estimated
# (`fleet.energy_intervals`, and `fleet.energy_between`, which takes the stored hours first).
INTERVAL_ENERGY = """    p_customer bigint, p_device bigint, p_edges timestamptz[], p_usual_interval_s double precision)
RETURNS TABLE (interval_no integer,
               energy_imp_kwh double precision, energy_exp_kwh double precision,
               energy_q_imp_kvarh double precision, energy_q_exp_kvarh double precision,
               energy_reset boolean, energy_estimated boolean)"""

# The same with `energy_estimated`: a spacing longer than 1.5 usual intervals.
ENERGY_INTERVALS = f"""
CREATE OR REPLACE FUNCTION fleet.energy_intervals(
{INTERVAL_ENERGY}
LANGUAGE sql STABLE SET jit = off AS $$
SELECT p.interval_no, p.energy_imp_kwh, p.energy_exp_kwh, p.energy_q_imp_kvarh,
       p.energy_q_exp_kvarh, p.energy_reset,
       coalesce(p.max_spacing_s > {ESTIMATED_SPACING_FACTOR} * p_usual_interval_s, false)
FROM fleet.energy_parts(p_customer, p_device, p_edges) AS p
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
