"""Read latency of the energy answers on a large central table, next to today's hourly read.

    uv run python bench/read_latency.py [--devices 20] [--days 400] [--interval-s 60] [--reps 30]

One throwaway cluster, a central database as `ingestd migrate` leaves it on plain PostgreSQL
(weekly partitions, hourly rollup). Rows are generated in SQL (devices x days at one sample per
interval: the defaults make 11.5 M rows; a slowly varying load, cumulative registers), the
rollup is computed by the housekeeping's own function (timed: the cost of rebuilding the
aggregate per million rows), then, for random devices and windows, p50/p95 of:

  hourly_view      today's hourly read: the hourly view over 93 days (what the endpoint ran before
                   energy was computed across hours)
  hourly_energy    fleet.hourly_energy over 93 days (edges, holes, resets)
  daily_energy     fleet.daily_energy over 365 local days (Europe/Amsterdam)
  daily_kolkata    fleet.daily_energy over 365 local days in Asia/Kolkata (midnight inside an
                   hour: the quarter-hour summaries of the split hours are read too)
  http_hourly      GET …/hourly over 93 days through a running ingestd (JSON)
  http_daily       GET …/daily over 365 days through a running ingestd (JSON)
  http_customer_year  GET …/{code}/energy?resolution=day over 365 days: every device of the
                   customer summed (all --devices devices are on one site; issue 23's target is
                   for 50 devices)
  http_site_demand GET …/sites/1/demand for one calendar month, 15-minute peak of the site

The targets printed are issue 23's (p95 <= 50 ms for one device, <= 500 ms for a 50-device
customer's year of days, on >= 10 M rows and a quiet machine).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import time
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from common import (
    IngestdProcess,
    create_central_database,
    exit_on_sigterm,
    machine_info,
)
from fleetdev.pgcluster import temporary_cluster
from ingestd.customers import add_customer
from ingestd.storage.bootstrap import MARK_ALL_DIRTY
from ingestd.storage.partitions import WEEK, ensure_partitions
from ingestd.storage.rollup import refresh_rollup
from psycopg import AsyncConnection
from report import Figure, Target, finish

ADMIN = "bench-admin-" + "x" * 32

# A load between 5 and 45 kW that varies over the day; registers integrate it exactly.
LOAD = """
INSERT INTO fleet.power_measurements
    (time, customer_id, device_id, received_at, p_total, v1, i1, energy_imp_kwh, energy_exp_kwh,
     energy_q_imp_kvarh, energy_q_exp_kvarh)
SELECT t, %(customer)s, d, t, 25 + 20 * sin(x), 230, 40, 1000 * d + 25 * h - 20 * (cos(x) - 1) * 24 / (2 * pi()),
       0, 100 + 5 * h, 0
FROM generate_series(1, %(devices)s) AS d,
     generate_series(%(start)s::timestamptz, %(end)s::timestamptz - interval '1 microsecond',
                     make_interval(secs => %(interval)s)) AS t,
     LATERAL (SELECT extract(epoch FROM t - %(origin)s::timestamptz) / 3600 AS h) AS hours,
     LATERAL (SELECT 2 * pi() * h / 24 AS x) AS phase
"""


def _percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {
        "p50_ms": round(1000 * statistics.median(ordered), 2),
        "p95_ms": round(1000 * p95, 2),
        "max_ms": round(1000 * ordered[-1], 2),
        "n": len(ordered),
    }


async def _load(dsn: str, customer: int, args: argparse.Namespace, origin: datetime) -> float:
    """Generate the rows (a month per statement) and roll them up; the rollup's seconds."""
    async with await AsyncConnection.connect(dsn, autocommit=True) as conn:
        end = origin + timedelta(days=args.days)
        await ensure_partitions(conn, [origin + WEEK * i for i in range(args.days // 7 + 2)])
        moment = origin
        while moment < end:
            upto = min(end, moment + timedelta(days=30))
            await conn.execute(
                LOAD,
                {
                    "customer": customer,
                    "devices": args.devices,
                    "start": moment,
                    "end": upto,
                    "interval": args.interval_s,
                    "origin": origin,
                },
            )
            print(f"  loaded up to {upto:%Y-%m-%d}", flush=True)
            moment = upto
        await conn.execute("ANALYZE fleet.power_measurements_scaled")
        started = time.perf_counter()
        await conn.execute(MARK_ALL_DIRTY)  # what a batch does for the hours it touches
        while (await refresh_rollup(conn, limit=20000)).buckets:
            pass
        seconds = time.perf_counter() - started
        await conn.execute("ANALYZE fleet.hourly_rollup")
    return seconds


def _timed(reps: int, call: Callable[[random.Random], object]) -> dict[str, float]:
    rnd = random.Random(7)
    call(rnd)  # warm the caches once
    samples = []
    for _ in range(reps):
        started = time.perf_counter()
        call(rnd)
        samples.append(time.perf_counter() - started)
    return _percentiles(samples)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=20)
    parser.add_argument("--days", type=int, default=400)
    parser.add_argument("--interval-s", type=int, default=60)
    parser.add_argument("--reps", type=int, default=30)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.days < 366:
        parser.error("--days must be at least 366 (a one-year daily query)")
    exit_on_sigterm()
    origin = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(
        days=args.days
    )
    rows = args.devices * args.days * 86400 // args.interval_s
    print(
        f"read latency: {args.devices} devices x {args.days} days every {args.interval_s} s = {rows:,} rows"
    )
    with temporary_cluster(prefix="fleet-bench-read-") as cluster:
        dsn = create_central_database(cluster)
        add_customer(dsn, "BENCH", "read latency")
        with psycopg.connect(dsn) as conn:
            (customer,) = conn.execute(
                "SELECT id FROM fleet.customers WHERE code = 'BENCH'"
            ).fetchone() or (0,)
        loaded = time.perf_counter()
        rollup_s = asyncio.run(_load(dsn, customer, args, origin))
        print(
            f"  loaded in {time.perf_counter() - loaded:.0f} s, rollup {rollup_s:.1f} s", flush=True
        )
        last = origin + timedelta(days=args.days)
        with psycopg.connect(dsn) as conn:  # the devices full set, as a pusher sends it
            conn.execute(
                """INSERT INTO fleet.sites (customer_id, id, name, timezone, updated_at)
                   VALUES (%s, 1, 'bench site', 'Europe/Amsterdam', now())""",
                (customer,),
            )
            conn.execute(
                """INSERT INTO fleet.devices (customer_id, id, site_id, serial_number, model,
                                              updated_at)
                   SELECT %s, d, 1, 'B-' || d, 'bench', now()
                   FROM generate_series(1, %s) AS d""",
                (customer, args.devices),
            )

        def window(rnd: random.Random, days: int) -> tuple[int, datetime, datetime]:
            start = origin + timedelta(hours=rnd.randrange(0, (args.days - days) * 24))
            return rnd.randrange(1, args.devices + 1), start, start + timedelta(days=days)

        results: dict[str, dict[str, float]] = {}
        with psycopg.connect(dsn, autocommit=True) as conn:
            (stored,) = conn.execute(
                "SELECT count(*) FROM fleet.power_measurements"
            ).fetchone() or (0,)

            def sql(
                query: str, days: int, daily: bool = False, zone: str = "Europe/Amsterdam"
            ) -> Callable[[random.Random], object]:
                def run(rnd: random.Random) -> object:
                    device, start, end = window(rnd, days)
                    if daily:
                        params: tuple[Any, ...] = (
                            customer,
                            device,
                            start.date(),
                            end.date(),
                            zone,
                        )
                    else:
                        params = (customer, device, start, end)
                    return conn.execute(query, params).fetchall()

                return run

            results["hourly_view"] = _timed(args.reps, sql(
                """SELECT bucket, samples, p_total_avg, p_total_min, p_total_max, v1_avg, v2_avg, v3_avg,
                          i1_avg, i2_avg, i3_avg, pf_total_avg, freq_avg
                   FROM fleet.hourly_per_device
                   WHERE customer_id = %s AND device_id = %s AND bucket >= %s AND bucket < %s
                   ORDER BY bucket""", 93))  # fmt: skip
            results["hourly_energy"] = _timed(
                args.reps, sql("SELECT * FROM fleet.hourly_energy(%s, %s, %s, %s)", 93)
            )
            results["daily_energy"] = _timed(
                args.reps, sql("SELECT * FROM fleet.daily_energy(%s, %s, %s, %s, %s)", 365, True)
            )
            results["daily_kolkata"] = _timed(
                args.reps,
                sql(
                    "SELECT * FROM fleet.daily_energy(%s, %s, %s, %s, %s)",
                    365,
                    True,
                    "Asia/Kolkata",
                ),
            )
        with IngestdProcess(dsn, {"INGESTD_ADMIN_TOKEN": ADMIN}) as ingestd:

            def http(kind: str, days: int) -> Callable[[random.Random], object]:
                def run(rnd: random.Random) -> object:
                    device, start, end = window(rnd, days)
                    base = f"{ingestd.base_url}/api/fleet/customers/BENCH"
                    if kind == "daily":
                        query = f"from={start.date()}&to={end.date()}&tz=Europe/Amsterdam"
                    else:
                        query = f"from={start:%Y-%m-%dT%H:%M:%SZ}&to={end:%Y-%m-%dT%H:%M:%SZ}"
                    url = f"{base}/devices/{device}/{kind}?{query}"
                    if kind == "customer":
                        url = f"{base}/energy?resolution=day&from={start.date()}&to={end.date()}"
                    elif kind == "demand":
                        month = f"{start:%Y-%m}"
                        after = f"{(start.replace(day=1) + timedelta(days=32)):%Y-%m}"
                        url = f"{base}/sites/1/demand?period=month&from={month}&to={after}"
                    request = urllib.request.Request(  # noqa: S310 - loopback http URL
                        url, headers={"Authorization": f"Bearer {ADMIN}"}
                    )
                    with urllib.request.urlopen(request, timeout=120) as resp:  # noqa: S310 - loopback
                        return resp.read()

                return run

            results["http_hourly"] = _timed(args.reps, http("hourly", 93))
            results["http_daily"] = _timed(args.reps, http("daily", 365))
            results["http_customer_year"] = _timed(max(3, args.reps // 5), http("customer", 365))
            results["http_site_demand"] = _timed(max(3, args.reps // 5), http("demand", 31))
        info = machine_info(dsn)
    print(f"\n{'query':<16}{'p50 ms':>10}{'p95 ms':>10}{'max ms':>10}")
    for name, r in results.items():
        print(f"{name:<16}{r['p50_ms']:>10.1f}{r['p95_ms']:>10.1f}{r['max_ms']:>10.1f}")
    ratio = results["hourly_energy"]["p95_ms"] / results["hourly_view"]["p95_ms"]
    print(f"\nhourly energy / today's hourly read, p95: {ratio:.1f}x")
    print(
        f"rollup of {stored:,} rows: {rollup_s:.1f} s ({rollup_s / max(stored, 1) * 1e6:.2f} µs per row)"
    )
    payload = {
        "config": vars(args) | {"json": str(args.json) if args.json else None},
        "rows": stored,
        "until": last.isoformat(),
        "rollup_seconds": rollup_s,
        "queries": results,
        "hourly_energy_vs_view_p95": ratio,
        "machine": info,
        "note": "the machine may have been shared with other work: compare ratios within one run",
    }
    finish("read-latency", payload, figures(payload), args.json)
    return 0


def figures(result: dict[str, Any]) -> list[Figure]:
    """The p95 of each energy answer against issue 23's targets (one device: 50 ms; a 50-device
    customer's year of days: 500 ms — with fewer devices the figure is not comparable)."""
    q = result["queries"]
    devices = result["config"]["devices"]
    spread = f"{result['rows']:,} rows; today's hourly read p95 {q['hourly_view']['p95_ms']:.0f} ms"
    out = []
    for name, label, bound in (
        ("http_hourly", "read p95: 93-day hourly, one device (HTTP)", 50.0),
        ("http_daily", "read p95: 1-year daily, one device (HTTP)", 50.0),
        (
            "http_customer_year",
            f"read p95: 1-year daily, customer of {devices} devices (HTTP)",
            500.0,
        ),
        ("hourly_energy", "read p95: 93-day hourly energy (SQL)", None),
        ("daily_energy", "read p95: 1-year daily energy (SQL)", None),
        ("daily_kolkata", "read p95: 1-year daily energy, Asia/Kolkata (SQL)", None),
        (
            "http_site_demand",
            f"read p95: a month's 15-min peak demand, site of {devices} (HTTP)",
            None,
        ),
    ):
        measured = f"{q[name]['p95_ms']:.0f} ms"
        if bound is None:
            out.append(Figure.of(label, measured, spread, "(reported)"))
        else:
            target = Target("<=", bound, " ms", of="p95")
            out.append(Figure.checked(label, q[name]["p95_ms"], measured, target, spread))
    return out


if __name__ == "__main__":
    sys.exit(main())
