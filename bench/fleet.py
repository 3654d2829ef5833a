"""A fleet of gateways at real cadence against one ingestd and one PostgreSQL, then an outage.

    uv run python bench/fleet.py [--gateways 10000] [--duration 600] [--outage 300]

One throwaway PostgreSQL cluster with the central database (plain PostgreSQL, weekly partitions,
the hourly rollup's upkeep), N customers each with its own token (`simulator.register_gateways`),
one `ingestd serve` with its defaults. N simulated gateways (`simulator.Gateway`: 5-50 meters
each, a sample per meter every --interval s from a random phase, sites + devices + measurements
as the pusher sends them, the pusher's retry rules) share one aiohttp client with --connections
connections. Phases:

  warmup    one interval: every gateway has sent its first tick (full sets included)
  steady    --duration s measured: latency p50/p95/p99 per batch type, errors by status,
            ingestd CPU % and RSS, PostgreSQL CPU %, connections to the central database,
            rows/s, the dirty-hour backlog, and the central database's growth per table
            extrapolated to a day
  outage    PostgreSQL stopped (`pg_ctl -m immediate`) for --outage s; gateways keep sampling
  recovery  PostgreSQL back: time until every gateway has sent its whole backlog, 429/503s,
            ingestd's peak RSS

The generator's own CPU is reported (it shares the machine's cores with what it measures).
Every loop is bounded by a deadline; Ctrl-C and SIGTERM stop the gateways, ingestd and the
cluster. Results go to bench/results/fleet-<time>.json (or --json).

    uv run python bench/fleet.py --capacity [--storage both] [--gateways 10000]

instead answers what one ingestd process carries, on plain PostgreSQL and on TimescaleDB (in a
cluster that preloads it; skipped, with the reason, where it is not installed), with today's
pusher (full sets on the first tick only): the largest fleet with p99 < 100 ms and no 503 (a
step search, bounded by --search-budget), ingestd's CPU per batch for gzip JSON and for columnar
measurements (from /proc), the rollup's backlog slope (`fleet.hourly_dirty` on plain
PostgreSQL, the continuous aggregates' invalidations and watermark on TimescaleDB) and what the
generator cost; one table of figures at the end (bench/fleet_capacity.py).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psycopg
from bodies import ValuePool
from common import (
    IngestdProcess,
    create_central_database,
    exit_on_sigterm,
    machine_info,
    peak_rss_bytes,
)
from cpu_pinning import parse_pin
from fleet_capacity import capacity
from fleet_figures import capacity_figures, print_run, run_figures
from fleet_probe import Sampler, process_tree
from fleet_probe import window as probe_window
from fleetcore.protocol import INGEST_PATH
from fleetdev.pgcluster import PgCluster, temporary_cluster, timescaledb_installed
from report import finish
from simulator import (
    TYPES,
    Fleet,
    build_gateways,
    latency,
    register_gateways,
    session,
)

DATABASE = "fleet_central"
DAY_S = 86_400.0

# Bytes on disk per part of the central database (heap with TOAST, free-space and visibility
# maps; indexes apart for the measurements).
TABLE_SIZES = """
SELECT 'measurements', coalesce(sum(pg_table_size(relid)), 0)
  FROM pg_partition_tree('fleet.power_measurements_scaled') WHERE isleaf
UNION ALL SELECT 'measurement_indexes', coalesce(sum(pg_indexes_size(relid)), 0)
  FROM pg_partition_tree('fleet.power_measurements_scaled') WHERE isleaf
UNION ALL SELECT 'ingest_events', pg_total_relation_size('fleet.ingest_events')
UNION ALL SELECT 'rejected_rows', pg_total_relation_size('fleet.rejected_rows')
UNION ALL SELECT 'hourly_rollup', coalesce(pg_total_relation_size(to_regclass('fleet.hourly_rollup')), 0)
UNION ALL SELECT 'hourly_dirty', pg_total_relation_size('fleet.hourly_dirty')
UNION ALL SELECT 'sites_devices',
  pg_total_relation_size('fleet.sites') + pg_total_relation_size('fleet.devices')
UNION ALL SELECT 'database', pg_database_size(current_database())
"""
ROW_COUNTS = """
SELECT (SELECT count(*) FROM fleet.ingest_events), (SELECT count(*) FROM fleet.rejected_rows),
       (SELECT count(*) FROM fleet.hourly_dirty)
"""


async def sizes(dsn: str) -> dict[str, int]:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        cur = await conn.execute(TABLE_SIZES)
        out = {str(name): int(size) for name, size in await cur.fetchall()}
        cur = await conn.execute(ROW_COUNTS)
        row = await cur.fetchone()
        assert row is not None
        out.update(events_rows=row[0], rejected_rows_rows=row[1], dirty_rows=row[2])
        return out


async def scenario(args: argparse.Namespace, cluster: PgCluster, dsn: str) -> dict[str, Any]:
    prep = time.monotonic()
    tokens = register_gateways(dsn, args.gateways)
    gateways = build_gateways(
        tokens, args.interval, (args.meters_min, args.meters_max), random.Random(args.seed)
    )
    pool = ValuePool(reject_every=args.reject_every)
    env = {"INGESTD_RATE_LIMIT_PER_S": "50", "INGESTD_RATE_LIMIT_BURST": "100"}
    env.update(dict(kv.split("=", 1) for kv in args.ingestd_env))
    meters = sum(g.meters for g in gateways)
    result: dict[str, Any] = {
        "ingestd_env": env,
        "meters": meters,
        "prepare_s": time.monotonic() - prep,
    }
    print(f"  {args.gateways} gateways, {meters} meters, prepared", file=sys.stderr)
    with IngestdProcess(dsn, extra_env=env) as ingestd:
        fleet = Fleet(ingestd.base_url + INGEST_PATH, pool, args.interval, args.full_sets)
        sampler = Sampler(cluster, dsn, DATABASE, ingestd.pid, fleet, timescale=False)
        stop = asyncio.Event()
        sampling = asyncio.create_task(sampler.run(stop))
        start = time.monotonic()
        horizon = start + args.warmup + args.duration + args.outage + args.recovery_timeout
        async with session(args.connections) as client:
            tasks = [asyncio.create_task(g.run(client, fleet, start, horizon)) for g in gateways]
            try:
                await asyncio.sleep(args.warmup)
                fleet.phase = "steady"
                before, t0 = await sizes(dsn), time.monotonic()
                await asyncio.sleep(args.duration)
                t1 = time.monotonic()
                after = await sizes(dsn)
                fleet.phase = "outage"
                print("  steady done; stopping PostgreSQL", file=sys.stderr)
                await asyncio.to_thread(cluster.stop, "immediate")
                await asyncio.sleep(args.outage)
                backlog = fleet.backlog_rows(gateways)
                await asyncio.to_thread(cluster.start)
                fleet.phase = "recovery"
                fleet.restarted_at = restarted = time.monotonic()
                for g in gateways:
                    if not g.ticks and not g.pending:
                        fleet.caught_up_at[g.index] = restarted
                fleet.expect_caught_up(len(gateways))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(fleet.all_caught_up.wait(), args.recovery_timeout)
                t_end = time.monotonic()
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                stop.set()
                await sampling
        result["ingestd_peak_rss_mib"] = (
            sum(peak_rss_bytes(p) for p in process_tree(ingestd.pid)) / 2**20
        )
    steady = [r for r in fleet.records if r.phase == "steady" and t0 <= r.sent_at < t1]
    window = t1 - t0
    result["steady"] = {
        "window_s": window,
        "per_type": {t: latency([r for r in steady if r.batch_type == t]) for t in TYPES},
        "all": latency(steady),
        "requests_per_s": len(steady) / window,
        **probe_window(sampler.samples, t0, t1),
    }
    s = result["steady"]
    s["rows_per_s"] = s["all"]["rows_ok"] / window
    s["ingestd_cpu_ms_per_request"] = 1000 * s.get("ingestd_cpu_share", 0) / s["requests_per_s"]
    growth = {k: (after[k] - before[k]) * DAY_S / window for k in after}
    result["growth_per_day_bytes"] = growth
    result["sizes_after_steady"] = after
    rows = s["per_type"]["measurements"]["rows_ok"]
    result["bytes_per_measurement_row"] = (
        (after["measurements"] - before["measurements"]) / rows if rows else None
    )
    recovery = [r for r in fleet.records if r.phase == "recovery"]
    caught = [t - restarted for t in fleet.caught_up_at.values()]
    result["outage"] = {
        "seconds": args.outage,
        "backlog_rows_at_restart": backlog,
        **latency([r for r in fleet.records if r.phase == "outage"]),
    }
    result["recovery"] = {
        **latency(recovery),
        "gateways_caught_up": len(caught),
        "time_to_all_caught_up_s": max(caught) if len(caught) == len(gateways) else None,
        "time_to_half_caught_up_s": statistics.median(caught) if caught else None,
        **probe_window(sampler.samples, restarted, t_end),
    }
    result["timeline"] = sampler.samples
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--gateways", type=int, default=10_000)
    parser.add_argument("--meters-min", type=int, default=5)
    parser.add_argument("--meters-max", type=int, default=50)
    parser.add_argument("--interval", type=float, default=60.0, help="seconds between ticks")
    parser.add_argument("--warmup", type=float, default=None, help="default: one interval")
    parser.add_argument("--duration", type=float, default=600.0, help="steady phase, seconds")
    parser.add_argument("--outage", type=float, default=300.0, help="seconds without PostgreSQL")
    parser.add_argument("--recovery-timeout", type=float, default=600.0)
    parser.add_argument("--connections", type=int, default=1000, help="client connections")
    parser.add_argument(
        "--full-sets",
        choices=("every-tick", "first-tick"),
        default="every-tick",
        help="sites/devices every tick (today's pusher) or only when changed (once here)",
    )
    parser.add_argument("--reject-every", type=int, default=10_000, help="0: no refused rows")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--ingestd-env", action="append", default=[], metavar="NAME=VALUE", help="repeatable"
    )
    parser.add_argument("--json", type=Path, help="write the results here")
    capacity_group = parser.add_argument_group(
        "--capacity: what one ingestd carries (bench/fleet_capacity.py)"
    )
    capacity_group.add_argument(
        "--capacity",
        action="store_true",
        help="search the largest fleet, CPU per batch by encoding, backlog slope; no outage",
    )
    capacity_group.add_argument(
        "--storage",
        choices=("plain", "timescaledb", "both"),
        default="both",
        help="with --capacity: the storage paths (TimescaleDB skipped where not installed)",
    )
    capacity_group.add_argument("--search-start", type=int, default=1000, help="gateways")
    capacity_group.add_argument("--search-factor", type=float, default=2.0)
    capacity_group.add_argument(
        "--search-budget", type=float, default=1800.0, help="seconds per storage path"
    )
    capacity_group.add_argument(
        "--step-duration", type=float, default=120.0, help="seconds measured per step"
    )
    capacity_group.add_argument(
        "--step-encoding",
        choices=("json", "columnar"),
        default="json",
        help="the steps' measurement batches: gzip JSON (as issue 26's outside run) or columnar "
        "(today's pusher once ingestd offers it)",
    )
    capacity_group.add_argument(
        "--encoding-duration", type=float, default=120.0, help="seconds per encoding"
    )
    capacity_group.add_argument(
        "--encoding-gateways",
        type=int,
        default=None,
        help="fleet size of the CPU-per-batch windows (default: the largest passing, else 1000)",
    )
    capacity_group.add_argument(
        "--pin",
        metavar="GEN:SERVICE",
        help="CPU lists: the generator on GEN, ingestd and PostgreSQL on SERVICE (e.g. 0:1)",
    )
    capacity_group.add_argument("--sample-s", type=float, default=2.0, help="probe period")
    capacity_group.add_argument(
        "--idle-s", type=float, default=20.0, help="ingestd alone first: its idle CPU share"
    )
    args = parser.parse_args(argv)
    if args.warmup is None:
        args.warmup = args.interval
    if not (1 <= args.gateways <= 50_000 and 1 <= args.meters_min <= args.meters_max <= 1000):
        print("need 1 <= gateways <= 50000 and 1 <= meters-min <= meters-max", file=sys.stderr)
        return 2
    if any("=" not in kv or not kv.startswith("INGESTD_") for kv in args.ingestd_env):
        print("--ingestd-env takes INGESTD_NAME=VALUE", file=sys.stderr)
        return 2
    if args.capacity and not (args.search_start >= 1 and args.search_factor > 1):
        print("need --search-start >= 1 and --search-factor > 1", file=sys.stderr)
        return 2
    if args.pin:
        try:
            parse_pin(args.pin)
        except ValueError as exc:
            print(exc, file=sys.stderr)
            return 2
    exit_on_sigterm()
    if args.capacity:
        return capacity_main(args)
    started = time.monotonic()
    with temporary_cluster(prefix="fleet-bench-fleet-") as cluster:
        dsn = create_central_database(cluster, DATABASE)
        machine = machine_info(dsn)
        result = asyncio.run(scenario(args, cluster, dsn))
    result = print_run(result, args)
    result.update(
        benchmark="fleet",
        config={k: v for k, v in vars(args).items() if k != "json"},
        machine=machine,
        runtime_s=time.monotonic() - started,
    )
    finish("fleet", result, run_figures(result), args.json)
    return 0


def capacity_main(args: argparse.Namespace) -> int:
    """`--capacity`: each storage path in its own throwaway cluster, one ingestd each."""
    started = time.monotonic()
    paths = ("plain", "timescaledb") if args.storage == "both" else (args.storage,)
    results: dict[str, Any] = {}
    machine: dict[str, Any] = {}
    for path in paths:
        timescale = path == "timescaledb"
        if timescale and not timescaledb_installed():
            reason = "TimescaleDB is not installed in this machine's PostgreSQL (timescaledb.so)"
            print(f"  {path}: skipped: {reason}", file=sys.stderr)
            results[path] = {"storage": path, "skipped": reason}
            continue
        print(f"  {path}:", file=sys.stderr)
        with temporary_cluster(prefix="fleet-bench-fleet-", timescaledb=timescale) as cluster:
            dsn = create_central_database(cluster, DATABASE, timescale=timescale)
            machine = machine or machine_info(dsn)
            results[path] = asyncio.run(capacity(args, cluster, dsn, timescale))
    result: dict[str, Any] = {
        "benchmark": "fleet",
        "mode": "capacity",
        "paths": results,
        "config": {k: v for k, v in vars(args).items() if k != "json"},
        "machine": machine,
        "runtime_s": time.monotonic() - started,
    }
    figures = [f for path in paths for f in capacity_figures(results[path])]
    finish("fleet", result, figures, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
