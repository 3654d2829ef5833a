"""What the plain path's rollup costs per device-hour, and whether housekeeping keeps up with a fleet.

    uv run python bench/rollup_recompute.py [--devices 20000] [--limits 1000,5000,20000] [--hours 1]

At fleet scale every device-hour is marked once while it is being written and recomputed once
after it ends (`ingestd.storage.rollup`): 10,000 gateways of 27.6 meters leave ~276,000
device-hours to recompute every hour. This bench fills one ended hour of one-a-minute samples for
`--devices` meters (spread over `--customers` customers, written straight into the stored table
with every value column set, so the aggregates do their full work; with `--hours` more, the
hours before it rolled up and stored first, untimed, so that the measured hour's stored energy
spans it and the hour before, as at a real hour's end), marks every device-hour
dirty as the batches would, and drains the marks with ingestd's own `refresh_rollup` in rounds
of each `--limits` size (the marks are set again before each size), timing each round by the
clock and by PostgreSQL's CPU from /proc. It then says what one hour of a fleet costs at the
measured rate, and how long housekeeping's rounds (INGESTD_ROLLUP_BATCH marks every
INGESTD_HOUSEKEEPING_INTERVAL_S, then the round's own time) take to drain it: the rollup keeps
up when that is well under an hour.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from common import (
    create_central_database,
    exit_on_sigterm,
    machine_info,
    postgres_cpu_seconds,
    synthetic_customers_sql,
    synthetic_fill_sql,
)
from fleetdev.pgcluster import PgCluster, temporary_cluster
from ingestd.storage.rollup import refresh_rollup
from report import Figure, Target, finish

DATABASE = "fleet_central"
METERS_PER_GATEWAY = 27.6
HOUSEKEEPING_INTERVAL_S = 10.0  # ingestd's INGESTD_HOUSEKEEPING_INTERVAL_S default
TARGET_DRAIN = Target("<", 3600.0, " s", of="an hour's marks drained")  # else marks pile up

CUSTOMERS = synthetic_customers_sql("RC", "Rollup")
# `--hours` ended hours of one-a-minute samples per device, the last one two hours ago.
FILL = synthetic_fill_sql(
    "h.hour",
    "60 * %(hours)s",
    "3",
    "(SELECT date_bin('1 hour', now(), TIMESTAMPTZ '2000-01-01') - INTERVAL '1 hour'"
    " - %(hours)s * INTERVAL '1 hour' AS hour) h,",
)
# Every stored device-hour before `%(before)s` marked ('infinity': all of them).
MARK = """
INSERT INTO fleet.hourly_dirty (customer_id, device_id, bucket, marked_at)
SELECT DISTINCT customer_id, device_id, date_bin('1 hour', time, TIMESTAMPTZ '2000-01-01'),
       now() - INTERVAL '1 hour'
FROM fleet.power_measurements_scaled WHERE time < %(before)s
ON CONFLICT DO NOTHING
"""
# Every device's last hour marked (the measured one, after the hours before it are rolled up).
MARK_LAST = """
INSERT INTO fleet.hourly_dirty (customer_id, device_id, bucket, marked_at)
SELECT DISTINCT customer_id, device_id, date_bin('1 hour', time, TIMESTAMPTZ '2000-01-01'),
       now() - INTERVAL '1 hour'
FROM fleet.power_measurements_scaled
WHERE time >= date_bin('1 hour', now(), TIMESTAMPTZ '2000-01-01') - INTERVAL '2 hours'
ON CONFLICT DO NOTHING
"""


def fill(dsn: str, customers: int, devices: int, hours: int = 1) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        ids = [row[0] for row in conn.execute(CUSTOMERS, (customers,)).fetchall()]
        conn.execute(FILL, {"ids": ids, "devices": devices, "hours": hours})
        conn.execute("VACUUM ANALYZE fleet.power_measurements_scaled")
        row = conn.execute("SELECT count(*) FROM fleet.power_measurements_scaled").fetchone()
        assert row is not None
        return int(row[0])


# The devices' stored energy caught up (as the housekeeping leaves it on plain PostgreSQL), so
# that each recompute also stores the energy of the hours it can move (storage.stored_energy).
STORED_ENERGY = """
INSERT INTO fleet.energy_frontier (customer_id, device_id, stored_until)
SELECT DISTINCT customer_id, device_id, TIMESTAMPTZ 'infinity' FROM fleet.power_measurements_scaled
ON CONFLICT (customer_id, device_id) DO UPDATE SET stored_until = EXCLUDED.stored_until
"""


async def drain(
    cluster: PgCluster, dsn: str, limit: int, stored_energy: bool = True, history: bool = False
) -> dict[str, Any]:
    """Mark every stored device-hour, then refresh in rounds of `limit` until none is left; with
    `history`, the hours before each device's last one rolled up first (untimed), so that its
    last hour is measured as an hour's end finds it: the hour before it stored, its span two
    hours."""
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute("TRUNCATE fleet.hourly_rollup, fleet.quarter_rollup")
        await conn.execute("DELETE FROM fleet.energy_frontier")
        if stored_energy:
            await conn.execute(STORED_ENERGY)
        if history:
            cur = await conn.execute("SELECT max(time) FROM fleet.power_measurements_scaled")
            last = await cur.fetchone()
            assert last is not None
            await conn.execute(MARK, {"before": last[0].replace(minute=0, second=0, microsecond=0)})
            while (await refresh_rollup(conn, settle_s=0.0, limit=max(limit, 20_000))).buckets:
                pass
            cur = await conn.execute(MARK_LAST)
        else:
            cur = await conn.execute(MARK, {"before": datetime.max.replace(tzinfo=UTC)})
        marked = cur.rowcount
        await conn.execute("VACUUM ANALYZE fleet.hourly_dirty")
        rounds: list[tuple[int, float, float]] = []
        while True:
            cpu0, t0 = postgres_cpu_seconds(cluster), time.perf_counter()
            report = await refresh_rollup(conn, settle_s=0.0, limit=limit)
            wall, cpu = time.perf_counter() - t0, postgres_cpu_seconds(cluster) - cpu0
            if not report.buckets:
                break
            rounds.append((report.buckets, wall, cpu))
        cur = await conn.execute("SELECT count(*) FROM fleet.hourly_dirty")
        left = await cur.fetchone()
        cur = await conn.execute("SELECT count(*) FROM fleet.hourly_rollup")
        stored = await cur.fetchone()
    done = sum(n for n, _, _ in rounds)
    wall = sum(w for _, w, _ in rounds)
    cpu = sum(c for _, _, c in rounds)
    return {
        "limit": limit,
        "marked": marked,
        "recomputed": done,
        "left": left[0] if left else None,
        "rollup_rows": stored[0] if stored else None,
        "rounds": len(rounds),
        "round_wall_s_median": statistics.median(w for _, w, _ in rounds) if rounds else None,
        "wall_ms_per_device_hour": 1000 * wall / done if done else None,
        "pg_cpu_ms_per_device_hour": 1000 * cpu / done if done else None,
    }


def at_fleet(run: dict[str, Any], gateways: int) -> dict[str, Any]:
    """One hour of `gateways` at the measured rate, drained in housekeeping's rounds."""
    hours = gateways * METERS_PER_GATEWAY
    limit = run["limit"]
    per_round_s = limit * (run["wall_ms_per_device_hour"] or 0.0) / 1000  # a full round
    rounds = -(-hours // limit)
    return {
        "gateways": gateways,
        "device_hours_per_hour": hours,
        "pg_cpu_s_per_hour": hours * run["pg_cpu_ms_per_device_hour"] / 1000,
        "drain_s": rounds * (HOUSEKEEPING_INTERVAL_S + per_round_s),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--devices", type=int, default=20_000, help="meters")
    parser.add_argument("--hours", type=int, default=1,
                        help="ended hours per meter; only the last is measured (the ones before "
                        "rolled up and stored first, as at an hour's end)")  # fmt: skip
    parser.add_argument("--customers", type=int, default=700)
    parser.add_argument("--limits", default="1000,5000,20000", help="marks per round, each run")
    parser.add_argument("--gateways", type=int, default=10_000, help="the fleet to extrapolate to")
    parser.add_argument("--stored-energy", choices=("on", "off"), default="on",
                        help="store each recomputed span's energy too (as ingestd does)")  # fmt: skip
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    limits = [int(x) for x in args.limits.split(",") if x]
    if not (1 <= args.customers <= args.devices and limits and min(limits) >= 1
            and args.hours >= 1):  # fmt: skip
        print("need 1 <= customers <= devices, positive --limits and --hours", file=sys.stderr)
        return 2
    exit_on_sigterm()
    started = time.monotonic()
    with temporary_cluster(prefix="fleet-bench-rollup-") as cluster:
        dsn = create_central_database(cluster, DATABASE)
        machine = machine_info(dsn)
        rows = fill(dsn, args.customers, args.devices, args.hours)
        print(f"  {rows:,} rows: {args.devices:,} meters x {args.hours} hours", file=sys.stderr)
        runs = []
        for limit in limits:
            run = asyncio.run(
                drain(cluster, dsn, limit, args.stored_energy == "on", history=args.hours > 1)
            )
            run["fleet"] = at_fleet(run, args.gateways)
            runs.append(run)
            print(
                f"  rounds of {limit:,}: {run['recomputed']:,} device-hours in {run['rounds']} "
                f"rounds, {run['wall_ms_per_device_hour']:.3f} ms each by the clock, "
                f"{run['pg_cpu_ms_per_device_hour']:.3f} ms of PostgreSQL CPU; left {run['left']}",
                file=sys.stderr,
            )
    result = {
        "benchmark": "rollup_recompute",
        "rows": rows,
        "runs": runs,
        "config": {k: v for k, v in vars(args).items() if k != "json"},
        "machine": machine,
        "runtime_s": time.monotonic() - started,
    }
    figures: list[Figure] = []
    for run in runs:
        fleet = run["fleet"]
        figures.append(
            Figure.of(
                f"rollup recompute, rounds of {run['limit']:,}: cost per device-hour",
                f"{run['pg_cpu_ms_per_device_hour']:.3f} ms PostgreSQL CPU",
                f"{run['wall_ms_per_device_hour']:.3f} ms by the clock; round median "
                f"{run['round_wall_s_median']:.2f} s; {run['recomputed']:,} recomputed, "
                f"{run['left']} marks left, {run['rollup_rows']:,} rollup rows",
            )
        )
        figures.append(
            Figure.checked(
                f"rollup at {fleet['gateways']:,} gateways, rounds of {run['limit']:,}: an "
                "hour's marks drained",
                fleet["drain_s"],
                f"{fleet['drain_s']:.0f} s",
                TARGET_DRAIN,
                f"{fleet['device_hours_per_hour']:,.0f} device-hours an hour; "
                f"{fleet['pg_cpu_s_per_hour']:.0f} s of PostgreSQL CPU an hour "
                f"({100 * fleet['pg_cpu_s_per_hour'] / 3600:.1f} % of a core)",
            )
        )
    finish("rollup_recompute", result, figures, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
