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
import sys
import time
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
from common import exit_on_sigterm, machine_info
from fleetdev.pgcluster import temporary_cluster, timescaledb_installed
from ingestd.storage import StoragePlan
from report import Figure, Target, finish
from storage_ingest import central_database, load_through_ingestd, values_not_identical
from storage_layouts import LAYOUTS, MINUTES_PER_YEAR, SOURCE, column_bytes, measure, scalar

TARGET_BYTES_PER_ROW = Target("<=", 100.0, " B/row")  # compressed, values exact
# Issue 22: through ingestd's own write path, every value bit-identical.
TARGET_INGESTD: dict[str, Target] = {
    "ingestd-ts": Target("<=", 40.0, " B/row"),  # compressed TimescaleDB (aim: 30)
    "ingestd-plain": Target("<=", 220.0, " B/row"),
}


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
                result["timescaledb_version"] = scalar(
                    conn, "SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'"
                )
            started = time.monotonic()
            conn.execute(SOURCE, {"meters": args.meters, "days": args.days, "start": args.start})
            result["generate_s"] = time.monotonic() - started
            result["rows"] = scalar(conn, "SELECT count(*) FROM src")
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
