"""Bytes on disk per measurement row: plain PostgreSQL vs compressed TimescaleDB, and column types.

    uv run python bench/storage.py [--meters 200] [--days 30]

One throwaway cluster (TimescaleDB preloaded when installed; without it only the plain rows are
measured and the TimescaleDB rows say SKIPPED with the reason). The server generates realistic
meter data once (`SOURCE`: the load curve of `fleetdev.simulator`'s meters, one sample a minute,
every value rounded to the resolution an Acuvim-class meter reports it at: 0.1 V, 0.001 A,
0.001 kW/kvar/kVA, 0.001 pf, 0.01 Hz, 0.1 kWh/kvarh registers that only count up, 0.01 % THD),
then copies the same rows into one table per layout:

  plain-float8      the central table's own DDL (double precision values), not compressed
  plain-scaled      the same with the values as scaled integers (value x 10^decimals)
  ts-float8         hypertable, 7-day chunks, compressed segmentby (customer_id, device_id)
                    orderby time DESC: today's production path
  ts-float8-asc     the same ordered by time ASC
  ts-scaled         hypertable with scaled-integer values, compressed like ts-float8
  ts-numeric        hypertable with numeric values, compressed like ts-float8

For each: bytes per row (table + indexes, compressed chunks included), compression seconds per
million rows, and the hourly query's latency (one device x all days; every device x one day) as
the median of 5 runs. The scaled layouts are checked to give back every value exactly
(`value_scaled / 10^decimals = value` for every row and column): no digit the meter sent is lost.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
from common import exit_on_sigterm, machine_info
from fleetcore import MEASUREMENT_VALUE_FIELDS
from fleetdev.pgcluster import temporary_cluster, timescaledb_installed
from ingestd.storage import StoragePlan
from report import Figure, Target, finish
from storage_ingest import central_database, load_through_ingestd, values_not_identical

TARGET_BYTES_PER_ROW = Target("<=", 100.0, " B/row")  # compressed, values exact
MINUTES_PER_YEAR = 525_960
# Issue 22: through ingestd's own write path, every value bit-identical.
TARGET_INGESTD: dict[str, Target] = {
    "ingestd-ts": Target("<=", 40.0, " B/row"),  # compressed TimescaleDB (aim: 30)
    "ingestd-plain": Target("<=", 220.0, " B/row"),
}

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
        out["uncompressed_bytes"] = _one(
            conn, "SELECT total_bytes FROM hypertable_detailed_size(%s)", (table,)
        )
        started = time.monotonic()
        conn.execute(f"SELECT count(compress_chunk(c)) FROM show_chunks('{table}') c")
        out["compress_s_per_million_rows"] = (time.monotonic() - started) * 1e6 / rows
        conn.execute(f"VACUUM ANALYZE {table}")
        out["bytes"] = _one(conn, "SELECT total_bytes FROM hypertable_detailed_size(%s)", (table,))
        out["column_bytes_per_row"] = column_bytes(conn, table, rows)
    else:
        out["bytes"] = _one(conn, "SELECT pg_total_relation_size(%s)", (table,))
        out["index_bytes"] = _one(conn, "SELECT pg_indexes_size(%s)", (table,))
    out["bytes_per_row"] = out["bytes"] / rows
    out["bytes_per_meter_year"] = out["bytes_per_row"] * MINUTES_PER_YEAR
    if values != "float8":
        cond = " OR ".join(
            f"x.{c}::float8 / 1e{d} IS DISTINCT FROM s.{c}" if values == "scaled"
            else f"x.{c}::float8 IS DISTINCT FROM s.{c}"
            for c, d in DECIMALS.items()
        )  # fmt: skip
        out["values_not_exact"] = _one(conn, EXACT.format(name=table, cond=cond))
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


def _one(conn: psycopg.Connection[Any], query: str, params: Any = None) -> Any:
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


def measure_ingestd(cluster: Any, src_dsn: str, timescale: bool, args: Any) -> dict[str, Any]:
    """The rows through ingestd's write path into the real schema (`storage_ingest`)."""
    name = "central_ts" if timescale else "central_plain"
    dsn = central_database(cluster, name, timescale=timescale, chunk_hours=args.chunk_hours)
    out = load_through_ingestd(src_dsn, dsn, args.start, args.days, timescale=timescale)
    out["bytes_per_row"] = out["bytes"] / max(out["rows"], 1)
    out["bytes_per_meter_year"] = out["bytes_per_row"] * MINUTES_PER_YEAR
    if "as_ingested_bytes" in out:
        out["as_ingested_bytes_per_row"] = out["as_ingested_bytes"] / max(out["rows"], 1)
    if timescale:
        with psycopg.connect(dsn) as conn:
            out["column_bytes_per_row"] = column_bytes(
                conn, "power_measurements_scaled", out["rows"]
            )
    started = time.monotonic()
    out["values_not_exact"] = values_not_identical(src_dsn, dsn, args.start, args.days)
    out["read_back_s"] = time.monotonic() - started
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    timescale = timescaledb_installed()
    extra = {"timescaledb.max_background_workers": "0"} if timescale else {}
    result: dict[str, Any] = {"timescaledb": timescale, "layouts": {}}
    with temporary_cluster(
        prefix="fleet-bench-storage-", timescaledb=timescale, **extra
    ) as cluster:
        dsn = cluster.create_database("storage")
        result["machine"] = machine_info(dsn)
        with psycopg.connect(dsn, autocommit=True) as conn:
            if timescale:
                conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
                result["timescaledb_version"] = _one(
                    conn, "SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'"
                )
            started = time.monotonic()
            conn.execute(SOURCE, {"meters": args.meters, "days": args.days, "start": args.start})
            result["generate_s"] = time.monotonic() - started
            result["rows"] = _one(conn, "SELECT count(*) FROM src")
            print(
                f"  {result['rows']:,} rows generated in {result['generate_s']:.0f} s",
                file=sys.stderr,
            )
            conn.execute("CREATE INDEX ON src (time)")
            conn.execute("ANALYZE src")
            for path in ("plain", "ts"):
                name = f"ingestd-{path}"
                if name not in args.layouts:
                    continue
                if path == "ts" and not timescale:
                    result["layouts"][name] = {"skipped": "TimescaleDB is not installed"}
                    continue
                result["layouts"][name] = measure_ingestd(cluster, dsn, path == "ts", args)
                print(f"  {name}: {result['layouts'][name]}", file=sys.stderr)
            for layout in LAYOUTS:
                if layout[0] not in args.layouts:
                    continue
                if layout[2] and not timescale:
                    result["layouts"][layout[0]] = {"skipped": "TimescaleDB is not installed"}
                    continue
                result["layouts"][layout[0]] = measure(conn, layout, args)
                print(f"  {layout[0]}: {result['layouts'][layout[0]]}", file=sys.stderr)
    return result


def report(result: dict[str, Any]) -> None:
    print()
    print(f"{result['rows']:,} rows; TimescaleDB {result.get('timescaledb_version', 'absent')}")
    header = (
        f"{'layout':<15} {'B/row':>7} {'MiB/meter-year':>15} {'compress s/M':>13} "
        f"{'1 dev x days ms':>16} {'all dev x 1 d ms':>17}  exact"
    )
    print(header)
    print("-" * len(header))
    for name, r in result["layouts"].items():
        if "skipped" in r:
            print(f"{name:<15} SKIPPED: {r['skipped']}")
            continue
        compress = r.get("compress_s_per_million_rows")
        exact = r.get("values_not_exact")
        one, every = r.get("query_one_device_all_days_ms"), r.get("query_all_devices_one_day_ms")
        print(
            f"{name:<15} {r['bytes_per_row']:>7.1f} {r['bytes_per_meter_year'] / 2**20:>15.1f} "
            f"{'-' if compress is None else f'{compress:.1f}':>13} "
            f"{'-' if one is None else f'{one:.1f}':>16} {'-' if every is None else f'{every:.1f}':>17}  "
            f"{'-' if exact is None else ('yes' if exact == 0 else f'{exact} rows differ')}"
        )
        if "as_ingested_bytes_per_row" in r:
            print(
                f"{'':<15} as ingested {r['as_ingested_bytes_per_row']:.1f} B/row; housekeeping "
                f"packed {r['packed_indexes']} closed weeks' indexes "
                f"({r['pack_s_per_million_rows']:.1f} s per M rows)"
            )
    best = min(
        ((r["bytes_per_row"], n)
         for n, r in result["layouts"].items()
         if n.startswith("ts-") and "skipped" not in r and r.get("values_not_exact", 0) == 0),
        default=None,
    ) if result["timescaledb"] else None  # fmt: skip
    if best:
        result["best_exact_compressed"] = {"layout": best[1], "bytes_per_row": best[0]}


def figures(result: dict[str, Any]) -> list[Figure]:
    """Bytes per measurement row by layout, and the best exact compressed one."""
    out = []
    for name, r in result["layouts"].items():
        if "skipped" in r:
            out.append(Figure.of(f"storage: {name}", "SKIPPED", r["skipped"]))
            continue
        exact = r.get("values_not_exact")
        out.append(
            Figure.of(
                f"storage: {name} bytes per row",
                f"{r['bytes_per_row']:.1f}",
                f"{r['bytes_per_meter_year'] / 2**20:.0f} MiB per meter-year"
                + ("" if exact is None else f"; values exact: {'yes' if exact == 0 else 'NO'}"),
                f"{TARGET_BYTES_PER_ROW} (compressed, exact)" if name.startswith("ts-") else "",
            )
        )
    for name, target in TARGET_INGESTD.items():
        r = result["layouts"].get(name)
        if r is None or "skipped" in r:
            continue
        exact = r["values_not_exact"] == 0
        out.append(
            Figure.checked(
                f"storage: {name} through ingestd's write path, every value bit-identical",
                r["bytes_per_row"],
                f"{r['bytes_per_row']:.1f} B/row, {r['values_not_exact']} rows differ",
                target,
                f"{r['rows']:,} rows",
                also=exact,
            )
        )
    best = result.get("best_exact_compressed")
    if best:
        out.append(
            Figure.checked(
                "storage: best exact compressed layout",
                best["bytes_per_row"],
                f"{best['bytes_per_row']:.1f} B/row",
                TARGET_BYTES_PER_ROW,
                best["layout"],
            )
        )
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--meters", type=int, default=200)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--start", default="2026-10-01T00:00:00+00:00")
    parser.add_argument(
        "--chunk-hours",
        type=int,
        default=int(StoragePlan().chunk_interval / timedelta(hours=1)),
        help="chunk interval of the ingestd-ts layout (default: ingestd's)",
    )
    names = ("ingestd-plain", "ingestd-ts", *(layout[0] for layout in LAYOUTS))
    parser.add_argument(
        "--layouts",
        default=",".join(names),
        help=f"comma-separated subset of {', '.join(names)} (default: all)",
    )
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    args.layouts = [n.strip() for n in args.layouts.split(",") if n.strip()]
    if unknown := sorted(set(args.layouts) - set(names)):
        print(f"unknown layouts: {', '.join(unknown)}", file=sys.stderr)
        return 2
    if not (1 <= args.meters <= 10_000 and 1 <= args.days <= 366):
        print("need 1 <= meters <= 10000 and 1 <= days <= 366", file=sys.stderr)
        return 2
    exit_on_sigterm()
    started = time.monotonic()
    result = run(args)
    report(result)
    result.update(benchmark="storage", config={k: v for k, v in vars(args).items() if k != "json"},
                  runtime_s=time.monotonic() - started)  # fmt: skip
    finish("storage", result, figures(result), args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
