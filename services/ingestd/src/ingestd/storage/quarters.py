"""The quarter-hour counter summaries: the register at every 15-minute edge, for both paths.

`fleet.quarter_per_device` has, per device and 15-minute bucket, the number of samples and the
same per-register counter summaries as the hourly aggregate (`fleet.counter_summary`, made by
the same aggregate `fleet.energy_counters`):

    bucket, customer_id, device_id, samples,
    energy_imp_kwh_counter, energy_exp_kwh_counter,
    energy_q_imp_kvarh_counter, energy_q_exp_kvarh_counter

With them the register interpolated at any quarter-hour edge is exact (the last sample before
the edge and the first after it are a quarter summary's last and the next one's first), which
the hourly summaries cannot give for an edge inside an hour: local midnight in a zone whose
offset is not a whole number of hours (Asia/Kolkata, Australia/Adelaide, America/St_Johns,
Pacific/Chatham, …), a local month's first midnight, and the fixed 15/30/60-minute intervals of
peak demand. Every UTC offset in use since 1972 is a multiple of 15 minutes, so every local
midnight and every local quarter hour is such an edge.

Storage per path, as for the hourly aggregate (`ingestd.storage.aggregate`):
- TimescaleDB: a second continuous aggregate (real-time, same refresh policy), refreshed
  together with the hourly one for back-filled hours (`storage.rollup.refresh_timescale`);
- plain PostgreSQL: the table `fleet.quarter_rollup` and a view that computes the quarters of
  the hours marked in `fleet.hourly_dirty` from the raw rows; the housekeeping recomputes a
  marked hour's quarters with its hourly row (`storage.rollup.refresh_rollup`).
"""

from __future__ import annotations

from ingestd.storage.aggregate import COUNTER_COLUMNS, ENERGY_COUNTERS
from ingestd.storage.layout import STORED_TABLE

__all__ = [
    "CLEAR_QUARTERS",
    "PLAIN_QUARTER_VIEW",
    "QUARTER_COLUMNS",
    "QUARTER_FROM_RAW",
    "QUARTER_ROLLUP_TABLE",
    "RECOMPUTE_QUARTERS",
    "TIMESCALE_QUARTER_CAGG",
]

QUARTER_COLUMNS: tuple[str, ...] = (
    "bucket", "customer_id", "device_id", "samples", *COUNTER_COLUMNS,
)  # fmt: skip

_EPOCH = "TIMESTAMPTZ '2000-01-01 00:00:00+00'"
_QUARTER = "INTERVAL '15 minutes'"

_AGGREGATES = f"""count(*) AS samples,
    {", ".join(f"fleet.counter_of({ENERGY_COUNTERS}, {k}) AS {c}" for k, c in enumerate(COUNTER_COLUMNS, 1))}"""

QUARTER_ROLLUP_TABLE = f"""
CREATE TABLE IF NOT EXISTS fleet.quarter_rollup (
    bucket       timestamptz NOT NULL,
    customer_id  bigint NOT NULL,
    device_id    bigint NOT NULL,
    samples      bigint NOT NULL,
    {", ".join(f"{c} fleet.counter_summary" for c in COUNTER_COLUMNS)},
    PRIMARY KEY (customer_id, device_id, bucket)
)"""

# Plain PostgreSQL: one quarter of one device from the raw rows (no row for a quarter without
# samples; as `fleet.hourly_from_raw`: a function, planned only when called, reading by key).
QUARTER_FROM_RAW = f"""
CREATE OR REPLACE FUNCTION fleet.quarter_from_raw(
    p_customer bigint, p_device bigint, p_bucket timestamptz)
RETURNS SETOF fleet.quarter_rollup
LANGUAGE sql STABLE SET jit = off AS $$
SELECT p_bucket, p_customer, p_device, {_AGGREGATES}
FROM {STORED_TABLE} m
WHERE m.customer_id = p_customer AND m.device_id = p_device
  AND m.time >= p_bucket AND m.time < p_bucket + {_QUARTER}
HAVING count(*) > 0
$$
"""


def _quarters_of_marked(marked: str) -> str:
    """The FROM-clause tail computing the quarters of the marked hours `marked` (customer_id,
    device_id, bucket); the quarter's start `k.bucket` depends on the mark alone, so a condition on
    it filters before any raw row is read."""
    return f"""CROSS JOIN LATERAL (SELECT {marked}.bucket + n * {_QUARTER} AS bucket
                    FROM generate_series(0, 3) AS n) AS k
CROSS JOIN LATERAL fleet.quarter_from_raw({marked}.customer_id, {marked}.device_id, k.bucket) AS f"""


_COMPUTED = f"k.bucket, {{0}}.customer_id, {{0}}.device_id, {', '.join(f'f.{c}' for c in QUARTER_COLUMNS[3:])}"
_HOUR_OF = f"date_bin(INTERVAL '1 hour', r.bucket, {_EPOCH})"
PLAIN_QUARTER_VIEW = f"""
CREATE OR REPLACE VIEW fleet.quarter_per_device AS
SELECT {", ".join(f"r.{c}" for c in QUARTER_COLUMNS)}
FROM fleet.quarter_rollup r
WHERE NOT EXISTS (
    SELECT 1 FROM fleet.hourly_dirty d
    WHERE d.customer_id = r.customer_id AND d.device_id = r.device_id AND d.bucket = {_HOUR_OF})
UNION ALL
SELECT {_COMPUTED.format("d")}
FROM fleet.hourly_dirty d
{_quarters_of_marked("d")}
"""

# The housekeeping's recompute of marked hours (parameters: customer ids, device ids, hours).
CLEAR_QUARTERS = """
DELETE FROM fleet.quarter_rollup q
USING unnest(%s::bigint[], %s::bigint[], %s::timestamptz[]) AS d(customer_id, device_id, bucket)
WHERE q.customer_id = d.customer_id AND q.device_id = d.device_id
  AND q.bucket >= d.bucket AND q.bucket < d.bucket + INTERVAL '1 hour'
"""
RECOMPUTE_QUARTERS = f"""
INSERT INTO fleet.quarter_rollup ({", ".join(QUARTER_COLUMNS)})
SELECT {_COMPUTED.format("d")}
FROM unnest(%s::bigint[], %s::bigint[], %s::timestamptz[]) AS d(customer_id, device_id, bucket)
{_quarters_of_marked("d")}
"""

TIMESCALE_QUARTER_CAGG = f"""
CREATE MATERIALIZED VIEW fleet.quarter_per_device
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT time_bucket({_QUARTER}, m.time) AS bucket, m.customer_id, m.device_id, {_AGGREGATES}
FROM {STORED_TABLE} m
GROUP BY time_bucket({_QUARTER}, m.time), m.customer_id, m.device_id
WITH NO DATA
"""
