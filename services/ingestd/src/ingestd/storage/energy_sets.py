"""The stored energy of many devices in one statement: a round's frontier steps, a recompute's spans.

At an hour's end every device's frontier step is due at once (10,000 gateways: ~276,000 devices),
and on plain PostgreSQL every device's ended hour is recomputed with its spans. One function call
per device (`fleet.store_energy`, then `fleet.advance_energy` around it) cost ~1.7 ms of
PostgreSQL CPU each, most of it the calls themselves: each nested function's statements started
their own executor, a dozen times per device. `fleet.store_energy_set(customers[], devices[],
froms[], tos[])` stores the hours [from, to) of every device given (hour edges, one range per
device) with two statements: the rows of those ranges deleted, and the energy of all of them
computed by one query and inserted:

- the summaries of each range's hours (one index range scan per device), and per register the
  nearest hour holding it before the range and the first at or after it (within a week first,
  the whole history only when that finds nothing; an ordered index scan that stops at the first);
- the segments between samples of `ingestd.storage.segments.SEGMENT_PIPELINE`, per device: each
  summary's own and the crossing to the next, split over the hours they overlap in proportion to
  time. The edges are whole hours, so an hour is `date_bin` of a time, not a `width_bucket` over
  an array of edges per device;
- per device-hour the four registers' energy, the reset flag and the longest spacing, joined with
  the hour's samples, first and last sample time, as `fleet.store_energy` stored them.

The same numbers as the function per device (the sums of an hour's pieces may be added in another
order: 1e-9 relative, `bench/stored_energy_upkeep.py` compares every stored row).
"""

from __future__ import annotations

from ingestd.storage.aggregate import COUNTER_COLUMNS
from ingestd.storage.revisions import MERGE_SPANS
from ingestd.storage.segments import EPOCH

__all__ = [
    "ENERGY_COLUMNS",
    "advance_energy_set",
    "energy_steps",
    "holder_before",
    "store_energy_set",
    "store_spans_set",
]

ENERGY_COLUMNS = ("energy_imp_kwh", "energy_exp_kwh", "energy_q_imp_kvarh", "energy_q_exp_kvarh")
_HOUR = "INTERVAL '1 hour'"
_WEEK = "INTERVAL '7 days'"


def _first(table: str, of: str, column: str, bound: str, *, before: bool, select: str) -> str:
    """`select` of the nearest row of `table` before `bound` (`before`) or the first at or after
    it, among a device's (`of`) hours holding the register of `column`: within a week first (an
    Append under LIMIT 1 stops at the first branch that answers), else the whole history."""
    op, order, near = ("<", "DESC", f">= {bound} - {_WEEK}") if before else (
        ">=", "ASC", f"< {bound} + {_WEEK}")  # fmt: skip
    where = f"{of} AND n.bucket {op} {bound} AND (n.{column}).last_time IS NOT NULL"
    return f"""(SELECT * FROM (
        (SELECT {select} FROM {table} n WHERE {where} AND n.bucket {near}
         ORDER BY n.bucket {order} LIMIT 1)
        UNION ALL
        (SELECT {select} FROM {table} n WHERE {where} ORDER BY n.bucket {order} LIMIT 1)) AS x
     LIMIT 1)"""


def holder_before(table: str, customer: str, device: str, at: str) -> str:
    """`fleet.energy_before` inline: the first hour whose energy a change at `at` or later can
    move (the nearest hour before it holding each register; `at` when none), for the device of
    the SQL expressions `customer` and `device`, looked up in `table`."""
    of = f"n.customer_id = {customer} AND n.device_id = {device}"
    holders = ", ".join(
        _first(table, of, c, at, before=True, select="n.bucket") for c in COUNTER_COLUMNS
    )
    return f"least({at}, {holders})"


_OF_RANGE = "n.customer_id = r.customer_id AND n.device_id = r.device_id"
_NEIGHBOURS = "\n        UNION ALL ".join(
    _first("{table}", _OF_RANGE, c, bound, before=before, select=f"n.bucket, {k}, n.{c}")
    for k, c in enumerate(COUNTER_COLUMNS, 1)
    for bound, before in (("r.lo", True), ("r.hi", False))
)
_UNPIVOT = ", ".join(f"({k}, h.{c})" for k, c in enumerate(COUNTER_COLUMNS, 1))
_PER_REGISTER = ",\n           ".join(
    f"sum(energy) FILTER (WHERE k = {k}) AS e{k}" for k in range(1, 5)
)
_KEY = "customer_id, device_id"

# The energy of every device-hour of the ranges (`ranges`: customer_id, device_id, lo, hi), as
# `ingestd.storage.segments.energy_parts` computes it for one device with hour edges, and the
# hours' samples: the rows `fleet.energy_hours` stores.
_STORED_ROWS = f"""
WITH ranges AS MATERIALIZED (
    SELECT r.customer_id, r.device_id, r.lo, r.hi
    FROM unnest(p_customers, p_devices, p_froms, p_tos) AS r(customer_id, device_id, lo, hi)
    WHERE r.hi > r.lo
), inside AS MATERIALIZED (
    SELECT h.* FROM ranges r
    JOIN {{table}} h ON h.customer_id = r.customer_id AND h.device_id = r.device_id
                    AND h.bucket >= r.lo AND h.bucket < r.hi
), summaries AS (
    SELECT h.customer_id, h.device_id, h.bucket, x.k, x.c
    FROM inside h CROSS JOIN LATERAL (VALUES {_UNPIVOT}) AS x(k, c)
    WHERE (x.c).last_time IS NOT NULL
    UNION ALL
    SELECT r.customer_id, r.device_id, nb.bucket, nb.k, nb.c
    FROM ranges r CROSS JOIN LATERAL (
        {_NEIGHBOURS}) AS nb(bucket, k, c)
), counters AS (
    SELECT {_KEY}, k, (c).first_time, (c).first_value, (c).last_time, (c).last_value,
           (c).increase, (c).resets, (c).max_spacing_s,
           lead((c).first_time) OVER w AS next_time, lead((c).first_value) OVER w AS next_value
    FROM summaries WINDOW w AS (PARTITION BY {_KEY}, k ORDER BY bucket)
), segments AS (
    SELECT {_KEY}, k, first_time AS t0, last_time AS t1, increase AS amount, resets > 0 AS reset,
           max_spacing_s AS spacing_s
    FROM counters
    UNION ALL
    SELECT {_KEY}, k, last_time, next_time,
           CASE WHEN next_value >= last_value THEN next_value - last_value
                ELSE greatest(next_value, 0) END,
           next_value < last_value, date_part('epoch', next_time - last_time)::float8
    FROM counters WHERE next_time IS NOT NULL
), placed AS (
    SELECT s.*, r.lo, r.hi, date_bin({_HOUR}, s.t0, {EPOCH}) AS b0,
           date_bin({_HOUR}, s.t1, {EPOCH}) AS b1
    FROM segments s JOIN ranges r USING ({_KEY})
), pieces AS (
    -- A segment within one hour is wholly that hour's (every hour's own samples); only those
    -- crossing an hour's edge are split.
    SELECT {_KEY}, k, b0 AS bucket, reset, spacing_s, amount AS energy, t1 > t0 AS overlapping,
           t0 = t1 AS holds_sample
    FROM placed WHERE b0 = b1 AND b0 >= lo AND b0 < hi
    UNION ALL
    SELECT {_KEY}, k, b, reset, spacing_s,
           amount * date_part('epoch', least(t1, b + {_HOUR}) - greatest(t0, b))::float8
           / date_part('epoch', t1 - t0)::float8,
           least(t1, b + {_HOUR}) > greatest(t0, b), false
    FROM (SELECT p.*, generate_series(greatest(b0, lo), least(b1, hi - {_HOUR}), {_HOUR}) AS b
          FROM placed p WHERE b1 > b0) AS crossing
), parts AS (
    SELECT {_KEY}, bucket,
           {_PER_REGISTER},
           coalesce(bool_or(reset) FILTER (WHERE overlapping), false) AS energy_reset,
           max(spacing_s) FILTER (WHERE overlapping) AS max_spacing_s
    FROM pieces WHERE overlapping OR holds_sample
    GROUP BY {_KEY}, bucket
)
SELECT coalesce(p.customer_id, h.customer_id), coalesce(p.device_id, h.device_id),
       coalesce(p.bucket, h.bucket), p.e1, p.e2, p.e3, p.e4, coalesce(p.energy_reset, false),
       p.max_spacing_s, coalesce(h.samples, 0), h.first_time, h.last_time
FROM parts p FULL JOIN inside h
  ON h.customer_id = p.customer_id AND h.device_id = p.device_id AND h.bucket = p.bucket"""


def store_energy_set(stored_hours: str) -> str:
    """`fleet.store_energy_set`: recompute the stored hours [from, to) (hour edges) of each device
    given, from the summaries of `stored_hours`; the rows stored. A device at most once (the
    ranges of a round's steps, or a recompute's merged spans)."""
    columns = ", ".join(ENERGY_COLUMNS)
    rows = _STORED_ROWS.replace("{table}", stored_hours)
    return f"""
CREATE OR REPLACE FUNCTION fleet.store_energy_set(
    p_customers bigint[], p_devices bigint[], p_froms timestamptz[], p_tos timestamptz[])
RETURNS bigint LANGUAGE plpgsql VOLATILE SET jit = off AS $$
DECLARE
    stored bigint;
BEGIN
    DELETE FROM fleet.energy_hours h
    USING unnest(p_customers, p_devices, p_froms, p_tos) AS r(customer_id, device_id, lo, hi)
    WHERE h.customer_id = r.customer_id AND h.device_id = r.device_id
      AND h.bucket >= r.lo AND h.bucket < r.hi;
    INSERT INTO fleet.energy_hours (customer_id, device_id, bucket, {columns},
                                    energy_reset, max_spacing_s, samples, first_time, last_time)
    {rows};
    GET DIAGNOSTICS stored = ROW_COUNT;
    RETURN stored;
END
$$
"""


def energy_steps(stored_hours: str, first_hours: tuple[str, ...]) -> str:
    """`fleet.energy_steps(until, step, devices, budget, hold)`: a round of frontier steps. The
    devices furthest behind `until` (at most the store's horizon), at most `devices`, as many as
    `budget` hours of work (the first always; a device's hours are those past its frontier, or
    of its history from its first hour in the tables `first_hours` when it has none yet; at
    least one), each with the hours to store, [lo, hi) — from the nearest hour before its
    frontier holding each register (`fleet.energy_before`, looked up in `stored_hours`: its
    crossing segments may end past the frontier) to at most `step` past it — and whether the
    frontier then becomes 'infinity' (`hold`, plain PostgreSQL: the marks say the rest)."""
    before = holder_before(stored_hours, "b.customer_id", "b.device_id", "b.stored_until")
    first = ", ".join(
        f"""(SELECT min(n.bucket) FROM {table} n
             WHERE n.customer_id = b.customer_id AND n.device_id = b.device_id)"""
        for table in first_hours
    )
    return f"""
CREATE OR REPLACE FUNCTION fleet.energy_steps(
    p_until timestamptz, p_step interval, p_devices integer, p_budget double precision,
    p_hold boolean)
RETURNS TABLE (customer_id bigint, device_id bigint, lo timestamptz, hi timestamptz,
               to_infinity boolean)
LANGUAGE plpgsql VOLATILE SET jit = off SET plan_cache_mode = force_generic_plan AS $$
#variable_conflict use_column
BEGIN
RETURN QUERY
WITH behind AS (
    SELECT f.customer_id, f.device_id, f.stored_until, h.until
    FROM fleet.energy_frontier f,
         (SELECT least(p_until, fleet.energy_horizon()) AS until) AS h
    WHERE f.stored_until < h.until
    ORDER BY f.stored_until LIMIT p_devices
    FOR UPDATE OF f
), ranged AS (
    SELECT b.customer_id, b.device_id, b.stored_until, b.until,
           CASE WHEN b.stored_until = '-infinity'
                THEN least(coalesce(least({first}), b.until), b.until)
                ELSE {before} END AS lo
    FROM behind b
), due AS (
    SELECT r.*, least(r.until, CASE WHEN r.stored_until = '-infinity' THEN r.lo
                                    ELSE r.stored_until END + p_step) AS hi
    FROM ranged r
), counted AS (
    SELECT d.*, sum(d.hours) OVER (ORDER BY d.stored_until, d.customer_id, d.device_id)
                - d.hours AS work_before
    FROM (SELECT due.*, greatest(1, date_part('epoch', due.hi - greatest(due.lo,
                 due.stored_until)) / 3600) AS hours FROM due) AS d
)
SELECT c.customer_id, c.device_id, c.lo, c.hi, p_hold AND c.hi >= c.until
FROM counted c WHERE c.work_before = 0 OR c.work_before < p_budget
ORDER BY c.stored_until, c.customer_id, c.device_id;
END
$$
"""


def advance_energy_set() -> str:
    """`fleet.advance_energy_set(customers[], devices[], los[], his[], to_infinity[])`: store
    the devices' ranges (`fleet.store_energy_set`) and move their frontiers to `hi` (or to
    'infinity'); the rows stored."""
    return """
CREATE OR REPLACE FUNCTION fleet.advance_energy_set(
    p_customers bigint[], p_devices bigint[], p_los timestamptz[], p_his timestamptz[],
    p_to_infinity boolean[])
RETURNS bigint LANGUAGE plpgsql VOLATILE SET jit = off AS $$
DECLARE
    stored bigint;
BEGIN
    stored := fleet.store_energy_set(p_customers, p_devices, p_los, p_his);
    UPDATE fleet.energy_frontier f
    SET stored_until = CASE WHEN u.to_infinity THEN TIMESTAMPTZ 'infinity' ELSE u.hi END
    FROM unnest(p_customers, p_devices, p_his, p_to_infinity) AS u(customer_id, device_id, hi, to_infinity)
    WHERE f.customer_id = u.customer_id AND f.device_id = u.device_id;
    RETURN stored;
END
$$
"""


def store_spans_set(stored_hours: str) -> str:
    """`fleet.store_spans_set(customers[], devices[], hours[])`: store again what the recomputed
    hours can move, where reads take the store; the rows stored.

    The span of each hour as `fleet.revised_span` over `stored_hours` (the nearest hour before
    it holding each register to the nearest one after it, looked up inline), a device's
    overlapping spans merged, each cut where reads take its store: before the nearest hours
    before its frontier (`fleet.energy_before`; the next frontier step stores from there on).
    Only hours before the frontier are looked up: the span of an hour at or after it starts at
    or after that cut (the nearest holder before a later hour is no earlier), so it stores
    nothing — at an hour's end on TimescaleDB, every refreshed hour (the frontier step stores
    them), which made this look-up most of the refresh's cost."""
    of = "n.customer_id = c.customer_id AND n.device_id = c.device_id"
    starts = ", ".join(_first(stored_hours, of, c, "c.bucket", before=True, select="n.bucket")
                       for c in COUNTER_COLUMNS)  # fmt: skip
    ends = ", ".join(_first(stored_hours, of, c, f"c.bucket + {_HOUR}", before=False,
                            select="n.bucket") for c in COUNTER_COLUMNS)  # fmt: skip
    cut = holder_before(stored_hours, "m.customer_id", "m.device_id", "m.stored_until")
    return f"""
CREATE OR REPLACE FUNCTION fleet.store_spans_set(
    p_customers bigint[], p_devices bigint[], p_hours timestamptz[])
RETURNS bigint LANGUAGE plpgsql VOLATILE SET jit = off AS $$
#variable_conflict use_column
BEGIN
RETURN (
WITH spans AS (
    SELECT c.customer_id, c.device_id, least(c.bucket, {starts}) AS span_start,
           greatest(c.bucket, {ends}) + {_HOUR} AS span_end
    FROM (SELECT DISTINCT * FROM unnest(p_customers, p_devices, p_hours)
          AS u(customer_id, device_id, bucket)) AS c
    JOIN fleet.energy_frontier f ON f.customer_id = c.customer_id AND f.device_id = c.device_id
    WHERE c.bucket < f.stored_until
){MERGE_SPANS}, reached AS (
    SELECT m.customer_id, m.device_id, m.span_start,
           least(m.span_end, CASE WHEN m.stored_until = 'infinity' THEN m.stored_until
                                  ELSE {cut} END) AS span_end
    FROM (SELECT merged.*, f.stored_until FROM merged
          JOIN fleet.energy_frontier f USING (customer_id, device_id)) AS m
    WHERE m.span_start < m.stored_until
)
SELECT coalesce(fleet.store_energy_set(array_agg(customer_id), array_agg(device_id),
                                       array_agg(span_start), array_agg(span_end)), 0)
FROM reached WHERE span_start < span_end);
END
$$
"""
