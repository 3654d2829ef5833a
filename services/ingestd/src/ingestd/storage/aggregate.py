"""The hourly-per-device aggregate: its columns and their SQL, for both storage paths.

`fleet.hourly_per_device` has the same name and columns on TimescaleDB (a continuous aggregate)
and on plain PostgreSQL (a view over a rollup table kept current by ingestd, with the hours not
yet rolled up computed from the raw rows at read time):

    bucket, customer_id, device_id, samples, first_time, last_time, max_gap_start, max_gap_end,
    p_total_avg, p_total_min, p_total_max,
    v1_avg, v2_avg, v3_avg, i1_avg, i2_avg, i3_avg, pf_total_avg, freq_avg,
    energy_imp_kwh_counter, energy_exp_kwh_counter,
    energy_q_imp_kvarh_counter, energy_q_exp_kvarh_counter

The `*_counter` columns are per-register summaries (`fleet.counter_summary`: first and last
sample carrying the register, the increase between them with resets counted, resets, longest
spacing), made by the aggregate `fleet.energy_counters` of migration 0003 in one ordered
pass over the hour's samples. They are not the hour's energy: energy between the last sample of
one hour and the first of the next, or across a hole, belongs to the hours it spans, so the
energy of an hour (or a local day) is computed at read time from these summaries and their
neighbours (`ingestd.storage.energy`, docs/ENERGY.md). Both paths run the same aggregate
expressions, so they store the same summaries.
"""

from __future__ import annotations

from ingestd.storage.layout import STORED_TABLE, value_sql

__all__ = [
    "AGGREGATE_COLUMNS",
    "AGGREGATE_IS_CURRENT",
    "AGGREGATE_READS_SCALED",
    "COUNTER_COLUMNS",
    "ENERGY_COUNTERS",
    "HOURLY_FROM_RAW",
    "MARK_ALL_DIRTY",
    "PLAIN_AGGREGATE_SELECT",
    "PLAIN_BUCKET",
    "PLAIN_BUCKET_VALUES",
    "PLAIN_VIEW",
    "REGISTERS",
    "ROLLUP_COVERING",
    "ROLLUP_COVERING_DROP",
    "ROLLUP_KEY_COVERS",
    "ROLLUP_KEY_SWAP",
    "ROLLUP_READ_COLUMNS",
    "ROLLUP_TABLE",
    "TIMESCALE_AGGREGATE_SELECT",
    "TIMESCALE_CAGG",
    "plain_bucket_rows",
]

REGISTERS: tuple[str, ...] = (
    "energy_imp_kwh", "energy_exp_kwh", "energy_q_imp_kvarh", "energy_q_exp_kvarh",
)  # fmt: skip
COUNTER_COLUMNS: tuple[str, ...] = tuple(f"{r}_counter" for r in REGISTERS)

AGGREGATE_COLUMNS: tuple[str, ...] = (
    "bucket", "customer_id", "device_id", "samples", "first_time", "last_time",
    "max_gap_start", "max_gap_end",
    "p_total_avg", "p_total_min", "p_total_max",
    "v1_avg", "v2_avg", "v3_avg", "i1_avg", "i2_avg", "i3_avg", "pf_total_avg", "freq_avg",
    *COUNTER_COLUMNS,
)  # fmt: skip

# One aggregate call; PostgreSQL computes identical aggregate calls of a query once.
_COUNTERS = (
    "fleet.energy_counters(date_part('epoch', m.time), "
    f"{', '.join(value_sql('m', r) for r in REGISTERS)} ORDER BY m.time)"
)
ENERGY_COUNTERS = _COUNTERS
"""The counters aggregate over the rows `m` of a group (the quarter-hour summaries use it too)."""


def _v(field: str) -> str:
    """A value as sent, from the stored row `m` (both paths read the stored table)."""
    return value_sql("m", field)


_AGGREGATES = f"""
    count(*) AS samples, min(m.time) AS first_time, max(m.time) AS last_time,
    to_timestamp(({_COUNTERS}).max_gap_start) AS max_gap_start,
    to_timestamp(({_COUNTERS}).max_gap_end) AS max_gap_end,
    avg({_v("p_total")}) AS p_total_avg, min({_v("p_total")}) AS p_total_min,
    max({_v("p_total")}) AS p_total_max,
    {", ".join(f"avg({_v(f)}) AS {f}_avg" for f in ("v1", "v2", "v3", "i1", "i2", "i3", "pf_total", "freq"))},
    {", ".join(f"fleet.counter_of({_COUNTERS}, {k}) AS {c}" for k, c in enumerate(COUNTER_COLUMNS, 1))}"""

# Plain PostgreSQL: date_bin on timestamptz does not depend on the session's TimeZone
# (date_trunc would); it gives the same buckets as TimescaleDB's time_bucket.
PLAIN_BUCKET = "date_bin(INTERVAL '1 hour', m.time, TIMESTAMPTZ '2000-01-01 00:00:00+00')"
PLAIN_AGGREGATE_SELECT = _AGGREGATES
TIMESCALE_AGGREGATE_SELECT = _AGGREGATES


# Plain PostgreSQL: one hour of one device computed from the raw rows (no row for an hour without
# samples). The view and the rollup call it per marked hour, so each hour is read through the
# primary key with partition pruning; being a function with its own settings it is planned only
# when called, once per query, so that reading the view does not plan the raw table's hundreds of
# weekly partitions at every reference. (A join + GROUP BY instead let the planner hash-join a
# device's whole history when the table held few devices: 60 ms per hour on a year of minutes.)
HOURLY_FROM_RAW = f"""
CREATE OR REPLACE FUNCTION fleet.hourly_from_raw(
    p_customer bigint, p_device bigint, p_bucket timestamptz)
RETURNS SETOF fleet.hourly_rollup
LANGUAGE sql STABLE SET jit = off AS $$
SELECT p_bucket, p_customer, p_device, {_AGGREGATES}
FROM {STORED_TABLE} m
WHERE m.customer_id = p_customer AND m.device_id = p_device
  AND m.time >= p_bucket AND m.time < p_bucket + INTERVAL '1 hour'
HAVING count(*) > 0
$$
"""
# The aggregate values of a marked hour `k` (a relation with customer_id, device_id, bucket):
# `SELECT k.bucket, k.customer_id, k.device_id, {PLAIN_BUCKET_VALUES} FROM … k {PLAIN_BUCKET_ROWS}`.
PLAIN_BUCKET_VALUES = ", ".join(f"f.{c}" for c in AGGREGATE_COLUMNS[3:])


def plain_bucket_rows(keys: str) -> str:
    """The FROM-clause tail that computes the marked hours of the relation `keys` (see above)."""
    return f"CROSS JOIN LATERAL fleet.hourly_from_raw({keys}.customer_id, {keys}.device_id, {keys}.bucket) AS f"


# --- the aggregate's objects, made by the bootstrap (`storage.bootstrap`) ----------------------


def _rollup_type(column: str) -> str:
    if column in COUNTER_COLUMNS:
        return "fleet.counter_summary"
    if column.endswith(("_time", "_start", "_end")):
        return "timestamptz"
    return "double precision"


# The rollup's primary key carries what the hourly and daily reads take from it (samples and
# the averages, minima and maxima), so that a device's hours are read from the index alone:
# index-only scans over consecutive leaf pages instead of a ~440-byte heap row per hour (the
# rows of a device's hours sit far apart, an hour of every device at a time). A rollup made
# before gets the new key from the bootstrap, built CONCURRENTLY (ingest and reads go on), then
# put in the old one's place in a moment (`ROLLUP_KEY_COVERS`, `ROLLUP_KEY_SWAP`).
ROLLUP_READ_COLUMNS = ("samples", "p_total_avg", "p_total_min", "p_total_max", "v1_avg", "v2_avg",
                       "v3_avg", "i1_avg", "i2_avg", "i3_avg", "pf_total_avg", "freq_avg")  # fmt: skip
_ROLLUP_KEY = (
    f"CONSTRAINT hourly_rollup_pkey PRIMARY KEY (customer_id, device_id, bucket) "
    f"INCLUDE ({', '.join(ROLLUP_READ_COLUMNS)})"
)
ROLLUP_TABLE = f"""
CREATE TABLE IF NOT EXISTS fleet.hourly_rollup (
    bucket       timestamptz NOT NULL,
    customer_id  bigint NOT NULL,
    device_id    bigint NOT NULL,
    samples      bigint NOT NULL,
    {", ".join(f"{c} {_rollup_type(c)}" for c in AGGREGATE_COLUMNS[4:])},
    {_ROLLUP_KEY}
)"""
ROLLUP_KEY_COVERS = """
SELECT i.indnatts > i.indnkeyatts FROM pg_index i
WHERE i.indexrelid = to_regclass('fleet.hourly_rollup_pkey')
"""
ROLLUP_COVERING_DROP = "DROP INDEX CONCURRENTLY IF EXISTS fleet.hourly_rollup_covering"
ROLLUP_COVERING = (
    "CREATE UNIQUE INDEX CONCURRENTLY hourly_rollup_covering ON fleet.hourly_rollup "
    f"(customer_id, device_id, bucket) INCLUDE ({', '.join(ROLLUP_READ_COLUMNS)})"
)
ROLLUP_KEY_SWAP = """ALTER TABLE fleet.hourly_rollup DROP CONSTRAINT hourly_rollup_pkey,
    ADD CONSTRAINT hourly_rollup_pkey PRIMARY KEY USING INDEX hourly_rollup_covering"""

# The aggregate of an older ingestd (energy as last - first per hour) has no counter summaries;
# it is rebuilt from the raw rows (docs/ENERGY.md, "Upgrading").
AGGREGATE_IS_CURRENT = """
SELECT EXISTS (SELECT 1 FROM pg_attribute
               WHERE attrelid = to_regclass('fleet.hourly_per_device')
                 AND attname = 'energy_q_exp_kvarh_counter' AND NOT attisdropped)
"""
# TimescaleDB: the continuous aggregate reads the hypertable itself; one made before the scaled
# layout (migration 0008) reads only the float8 columns and is rebuilt.
AGGREGATE_READS_SCALED = """
SELECT strpos(pg_get_viewdef('fleet.hourly_per_device'::regclass), 'p_total_scaled') > 0
"""

PLAIN_VIEW = f"""
CREATE OR REPLACE VIEW fleet.hourly_per_device AS
SELECT {", ".join(f"r.{c}" for c in AGGREGATE_COLUMNS)}
FROM fleet.hourly_rollup r
WHERE NOT EXISTS (
    SELECT 1 FROM fleet.hourly_dirty d
    WHERE d.customer_id = r.customer_id AND d.device_id = r.device_id AND d.bucket = r.bucket)
UNION ALL
SELECT d.bucket, d.customer_id, d.device_id, {PLAIN_BUCKET_VALUES}
FROM fleet.hourly_dirty d
{plain_bucket_rows("d")}
"""

# Marked as of "-infinity": rebuilding the rollup revises no energy (storage.revisions).
MARK_ALL_DIRTY = f"""
INSERT INTO fleet.hourly_dirty (customer_id, device_id, bucket, marked_at)
SELECT DISTINCT m.customer_id, m.device_id, {PLAIN_BUCKET}, TIMESTAMPTZ '-infinity'
FROM {STORED_TABLE} m
ON CONFLICT DO NOTHING
"""

TIMESCALE_CAGG = f"""
CREATE MATERIALIZED VIEW fleet.hourly_per_device
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT time_bucket(INTERVAL '1 hour', m.time) AS bucket, m.customer_id, m.device_id,
       {TIMESCALE_AGGREGATE_SELECT}
FROM {STORED_TABLE} m
GROUP BY time_bucket(INTERVAL '1 hour', m.time), m.customer_id, m.device_id
WITH NO DATA
"""
