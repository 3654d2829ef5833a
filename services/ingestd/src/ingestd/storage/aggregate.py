"""The hourly-per-device aggregate: its columns and their SQL, for both storage paths.

`fleet.hourly_per_device` has the same name and columns on TimescaleDB (a continuous aggregate)
and on plain PostgreSQL (a view over a rollup table kept current by ingestd, with the hours not
yet rolled up computed from the raw rows at read time):

    bucket, customer_id, device_id, samples,
    p_total_avg, p_total_min, p_total_max,
    v1_avg, v2_avg, v3_avg, i1_avg, i2_avg, i3_avg, pf_total_avg, freq_avg,
    energy_imp_kwh, energy_exp_kwh

Energy in the hour comes from the cumulative registers: the register's value at the hour's last
sample minus its value at the hour's first sample (`last(x, time) - first(x, time)`; either is
NULL when that sample did not carry the register). So:
- energy between the last sample of one hour and the first of the next is not attributed to
  either hour; with one sample per minute that is one minute in sixty;
- an hour without samples has no row (its energy shows up nowhere: the next hour does not
  reach back);
- a meter reset or register roll-over inside the hour makes the difference negative; it is kept
  as stored (so that nothing is hidden) and the read API reports such an hour's energy as null
  with `energy_reset: true`.
"""

from __future__ import annotations

__all__ = [
    "AGGREGATE_COLUMNS",
    "PLAIN_AGGREGATE_SELECT",
    "TIMESCALE_AGGREGATE_SELECT",
]

AGGREGATE_COLUMNS: tuple[str, ...] = (
    "bucket", "customer_id", "device_id", "samples",
    "p_total_avg", "p_total_min", "p_total_max",
    "v1_avg", "v2_avg", "v3_avg", "i1_avg", "i2_avg", "i3_avg", "pf_total_avg", "freq_avg",
    "energy_imp_kwh", "energy_exp_kwh",
)  # fmt: skip

_VALUE_AGGREGATES = """
    count(*) AS samples,
    avg(m.p_total) AS p_total_avg, min(m.p_total) AS p_total_min, max(m.p_total) AS p_total_max,
    avg(m.v1) AS v1_avg, avg(m.v2) AS v2_avg, avg(m.v3) AS v3_avg,
    avg(m.i1) AS i1_avg, avg(m.i2) AS i2_avg, avg(m.i3) AS i3_avg,
    avg(m.pf_total) AS pf_total_avg, avg(m.freq) AS freq_avg"""

# Plain PostgreSQL: the bucket expression and first/last spelled with built-ins. date_bin on
# timestamptz does not depend on the session's TimeZone (date_trunc would).
PLAIN_BUCKET = "date_bin(INTERVAL '1 hour', m.time, TIMESTAMPTZ '2000-01-01 00:00:00+00')"
PLAIN_AGGREGATE_SELECT = f"""{_VALUE_AGGREGATES},
    (array_agg(m.energy_imp_kwh ORDER BY m.time DESC))[1]
        - (array_agg(m.energy_imp_kwh ORDER BY m.time))[1] AS energy_imp_kwh,
    (array_agg(m.energy_exp_kwh ORDER BY m.time DESC))[1]
        - (array_agg(m.energy_exp_kwh ORDER BY m.time))[1] AS energy_exp_kwh"""

TIMESCALE_AGGREGATE_SELECT = f"""{_VALUE_AGGREGATES},
    last(m.energy_imp_kwh, m.time) - first(m.energy_imp_kwh, m.time) AS energy_imp_kwh,
    last(m.energy_exp_kwh, m.time) - first(m.energy_exp_kwh, m.time) AS energy_exp_kwh"""
