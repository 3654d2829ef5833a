"""The layouts `bench/storage.py` compares, each its own table of the same generated rows.

`SOURCE` makes realistic meter data in the server once (the load curve of `fleetdev.simulator`'s
meters, one sample a minute, every value rounded to the resolution an Acuvim-class meter
reports it at, `DECIMALS`); `measure` copies it into one table per layout (`LAYOUTS`: plain or
a compressed hypertable, values as double precision, scaled integers or numeric) and measures
its bytes per row, compression time, exactness and the hourly queries' latency.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import psycopg
from fleetcore import MEASUREMENT_VALUE_FIELDS

__all__ = [
    "DECIMALS",
    "LAYOUTS",
    "MINUTES_PER_YEAR",
    "SOURCE",
    "column_bytes",
    "measure",
    "scalar",
]

MINUTES_PER_YEAR = 525_960

# Decimals each value carries at the meter's resolution.
DECIMALS: dict[str, int] = {
    **dict.fromkeys(("v1", "v2", "v3", "v12", "v23", "v31"), 1),
    **dict.fromkeys(("i1", "i2", "i3", "i_n"), 3),
    **dict.fromkeys(("p1", "p2", "p3", "p_total", "q_total", "s_total", "pf_total"), 3),
    "freq": 2,
    **dict.fromkeys(
        ("energy_imp_kwh", "energy_exp_kwh", "energy_q_imp_kvarh", "energy_q_exp_kvarh"), 1
    ),
    **dict.fromkeys(("thd_v", "thd_i"), 2),
}
assert tuple(DECIMALS) == MEASUREMENT_VALUE_FIELDS

# The simulator's meters: a daily load curve with noise, per device a base load and phase;
# energy registers are running sums of power over the minute.
SOURCE = """
CREATE UNLOGGED TABLE src AS
WITH s AS (
    SELECT t, d AS device_id,
           t + make_interval(secs => 1 + 3 * random()) AS received_at,
           230 + 1.5 * (random() + random() + random() - 1.5) * 2 AS va,
           230 + 1.5 * (random() + random() + random() - 1.5) * 2 AS vb,
           230 + 1.5 * (random() + random() + random() - 1.5) * 2 AS vc,
           greatest(0.1, (5 + (d * 37) %% 55)
               * (0.55 + 0.45 * sin(2 * pi() * (extract(hour FROM t) + extract(minute FROM t) / 60 - 6) / 24 + d))
               * (0.95 + 0.1 * random())) AS p,
           0.90 + 0.09 * random() AS pf,
           0.3 + 0.07 * random() AS s1, 0.3 + 0.07 * random() AS s2, 0.3 + 0.07 * random() AS s3
    FROM generate_series(1, %(meters)s) AS d,
         generate_series(%(start)s::timestamptz,
                         %(start)s::timestamptz + make_interval(days => %(days)s) - interval '1 minute',
                         interval '1 minute') AS t
), r AS (
    SELECT t, device_id, received_at,
           round(va::numeric, 1) AS v1, round(vb::numeric, 1) AS v2, round(vc::numeric, 1) AS v3,
           round((va * sqrt(3) + random() - 0.5)::numeric, 1) AS v12,
           round((vb * sqrt(3) + random() - 0.5)::numeric, 1) AS v23,
           round((vc * sqrt(3) + random() - 0.5)::numeric, 1) AS v31,
           p * s1 / (s1 + s2 + s3) AS pa, p * s2 / (s1 + s2 + s3) AS pb, p * s3 / (s1 + s2 + s3) AS pc,
           va, vb, vc, p, pf
    FROM s
)
SELECT t AS time, 1::bigint AS customer_id, device_id::bigint, received_at,
       v1::float8, v2::float8, v3::float8, v12::float8, v23::float8, v31::float8,
       round((pa * 1000 / (va * pf))::numeric, 3)::float8 AS i1,
       round((pb * 1000 / (vb * pf))::numeric, 3)::float8 AS i2,
       round((pc * 1000 / (vc * pf))::numeric, 3)::float8 AS i3,
       round((abs(pa / va - pb / vb) * 100 / pf)::numeric, 3)::float8 AS i_n,
       round(pa::numeric, 3)::float8 AS p1, round(pb::numeric, 3)::float8 AS p2,
       round(pc::numeric, 3)::float8 AS p3, round(p::numeric, 3)::float8 AS p_total,
       round((p * tan(acos(pf)))::numeric, 3)::float8 AS q_total,
       round((p / pf)::numeric, 3)::float8 AS s_total, round(pf::numeric, 3)::float8 AS pf_total,
       round((50 + 0.02 * (random() + random() + random() - 1.5) * 2)::numeric, 2)::float8 AS freq,
       round((1000 + device_id * 971 + sum(p / 60) OVER w)::numeric, 1)::float8 AS energy_imp_kwh,
       round((device_id * 1.3)::numeric, 1)::float8 AS energy_exp_kwh,
       round((100 + device_id * 97 + sum(p * tan(acos(pf)) / 60) OVER w)::numeric, 1)::float8
           AS energy_q_imp_kvarh,
       0::float8 AS energy_q_exp_kvarh,
       round((1.5 + 1.5 * random())::numeric, 2)::float8 AS thd_v,
       round((3 + 5 * random())::numeric, 2)::float8 AS thd_i
FROM r
WINDOW w AS (PARTITION BY device_id ORDER BY t)
"""

KEYS = "time timestamptz NOT NULL, customer_id bigint NOT NULL, device_id bigint NOT NULL, received_at timestamptz NOT NULL"
PK = "PRIMARY KEY (customer_id, device_id, time)"


def _scaled_type(column: str) -> str:
    return "bigint" if column.startswith("energy") else "integer"


def ddl(name: str, values: str) -> str:
    if values == "float8":
        cols = ", ".join(f"{c} double precision" for c in DECIMALS)
    elif values == "numeric":
        cols = ", ".join(f"{c} numeric" for c in DECIMALS)
    else:
        cols = ", ".join(f"{c} {_scaled_type(c)}" for c in DECIMALS)
    return f"CREATE TABLE {name} ({KEYS}, {cols}, {PK})"


def select_from_src(values: str) -> str:
    if values == "float8":
        exprs = list(DECIMALS)
    elif values == "numeric":
        exprs = [f"round({c}::numeric, {d})" for c, d in DECIMALS.items()]
    else:
        exprs = [f"round({c} * 1e{d})::{_scaled_type(c)}" for c, d in DECIMALS.items()]
    return f"SELECT time, customer_id, device_id, received_at, {', '.join(exprs)} FROM src"


EXACT = "SELECT count(*) FROM src s JOIN {name} x USING (customer_id, device_id, time) WHERE {cond}"

LAYOUTS: tuple[tuple[str, str, bool, str], ...] = (
    # name, values, timescale, orderby
    ("plain-float8", "float8", False, ""),
    ("plain-scaled", "scaled", False, ""),
    ("ts-float8", "float8", True, "time DESC"),
    ("ts-float8-asc", "float8", True, "time ASC"),
    ("ts-scaled", "scaled", True, "time DESC"),
    ("ts-numeric", "numeric", True, "time DESC"),
)


def _p_total(values: str) -> str:
    return "p_total / 1000.0" if values == "scaled" else "p_total"


def measure(
    conn: psycopg.Connection[Any], layout: tuple[str, str, bool, str], args: Any
) -> dict[str, Any]:
    name, values, timescale, orderby = layout
    table = name.replace("-", "_")
    conn.execute(ddl(table, values))
    if timescale:
        conn.execute("SELECT create_hypertable(%s, by_range('time', INTERVAL '7 days'))", (table,))
        conn.execute(
            f"ALTER TABLE {table} SET (timescaledb.compress, "
            f"timescaledb.compress_segmentby = 'customer_id, device_id', "
            f"timescaledb.compress_orderby = '{orderby}')"
        )
    started = time.monotonic()
    rows = conn.execute(f"INSERT INTO {table} {select_from_src(values)}").rowcount
    load_s = time.monotonic() - started
    conn.execute(f"VACUUM ANALYZE {table}")
    out: dict[str, Any] = {"rows": rows, "load_s": load_s}
    if timescale:
        out["uncompressed_bytes"] = scalar(
            conn, "SELECT total_bytes FROM hypertable_detailed_size(%s)", (table,)
        )
        started = time.monotonic()
        conn.execute(f"SELECT count(compress_chunk(c)) FROM show_chunks('{table}') c")
        out["compress_s_per_million_rows"] = (time.monotonic() - started) * 1e6 / rows
        conn.execute(f"VACUUM ANALYZE {table}")
        out["bytes"] = scalar(
            conn, "SELECT total_bytes FROM hypertable_detailed_size(%s)", (table,)
        )
        out["column_bytes_per_row"] = column_bytes(conn, table, rows)
    else:
        out["bytes"] = scalar(conn, "SELECT pg_total_relation_size(%s)", (table,))
        out["index_bytes"] = scalar(conn, "SELECT pg_indexes_size(%s)", (table,))
    out["bytes_per_row"] = out["bytes"] / rows
    out["bytes_per_meter_year"] = out["bytes_per_row"] * MINUTES_PER_YEAR
    if values != "float8":
        cond = " OR ".join(
            f"x.{c}::float8 / 1e{d} IS DISTINCT FROM s.{c}" if values == "scaled"
            else f"x.{c}::float8 IS DISTINCT FROM s.{c}"
            for c, d in DECIMALS.items()
        )  # fmt: skip
        out["values_not_exact"] = scalar(conn, EXACT.format(name=table, cond=cond))
    p = _p_total(values)
    one_device = (
        f"SELECT date_trunc('hour', time), avg({p}), min({p}), max({p}), count(*) FROM {table} "
        "WHERE customer_id = 1 AND device_id = 7 AND time >= %(start)s "
        "AND time < %(start)s::timestamptz + make_interval(days => %(days)s) GROUP BY 1"
    )
    all_devices = (
        f"SELECT date_trunc('hour', time), device_id, avg({p}), min({p}), max({p}), count(*) "
        f"FROM {table} WHERE customer_id = 1 AND time >= %(start)s "
        "AND time < %(start)s::timestamptz + interval '1 day' GROUP BY 1, 2"
    )
    params = {"start": args.start, "days": args.days}
    out["query_one_device_all_days_ms"] = _median_ms(conn, one_device, params)
    out["query_all_devices_one_day_ms"] = _median_ms(conn, all_devices, params)
    conn.execute(f"DROP TABLE {table}")
    return out


COMPRESSED_CHUNKS = """
SELECT format('%%I.%%I', z.schema_name, z.table_name)
FROM _timescaledb_catalog.chunk c
JOIN _timescaledb_catalog.chunk z ON z.id = c.compressed_chunk_id
JOIN _timescaledb_catalog.hypertable h ON h.id = c.hypertable_id
WHERE h.table_name = %s
"""


def column_bytes(conn: psycopg.Connection[Any], table: str, rows: int) -> dict[str, float]:
    """Compressed bytes per row of each column (the values as stored, before page overhead)."""
    chunks = [r[0] for r in conn.execute(COMPRESSED_CHUNKS, (table,)).fetchall()]
    columns = ("time", "received_at", *DECIMALS)
    if table == "power_measurements_scaled":  # the stored layout: integer steps and exact doubles
        columns = (*columns, *(f"{c}_scaled" for c in DECIMALS))
    totals = dict.fromkeys(columns, 0)
    for chunk in chunks:
        sums = ", ".join(f"coalesce(sum(pg_column_size({c})), 0)" for c in columns)
        row = conn.execute(f"SELECT {sums} FROM {chunk}").fetchone()
        assert row is not None
        for c, v in zip(columns, row, strict=True):
            totals[c] += int(v)
    return {c: round(v / rows, 2) for c, v in totals.items()}


def scalar(conn: psycopg.Connection[Any], query: str, params: Any = None) -> Any:
    row = conn.execute(query, params).fetchone()
    return row[0] if row else None


def _median_ms(conn: psycopg.Connection[Any], query: str, params: dict[str, Any]) -> float:
    conn.execute(query, params).fetchall()  # warm the cache
    times = []
    for _ in range(5):
        started = time.perf_counter()
        conn.execute(query, params).fetchall()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)
