"""Read latency of the energy answers on a large central table, before and after the stored
energy, in one run on the same data.

    uv run python bench/read_latency.py [--devices 50] [--days 370] [--interval-s 150] [--reps 30]
                                        [--baseline REF] [--timescale]

One throwaway cluster, a central database as `ingestd migrate` leaves it (plain PostgreSQL:
weekly partitions, rollup tables; `--timescale`: hypertable and continuous aggregates). The rows
are generated in SQL straight into the stored table (devices x days at one sample per interval:
the defaults make 10.7 M rows; a slowly varying load, cumulative registers), the hourly and
quarter-hour aggregates computed set-based (the same aggregate expressions as the housekeeping),
then the stored energy built by the housekeeping's own function (timed: the backfill's cost).

Then two phases on the same data, each with the same random devices and windows and an ingestd
of this checkout:
  before   the read functions of `--baseline` (default: the commit before the stored energy),
           installed from git over the current ones: energy computed from the summaries per read;
           ingestd with one pooled connection (no read split over two connections)
  after    the current functions: stored hours, what is not stored yet computed; ingestd with 4
           pooled connections, so that a long read finds one idle to take half its work
and p50/p95 of:

  hourly_view      the plain hourly view over 93 days (no energy: the floor of any hourly read)
  hourly_energy    fleet.hourly_energy over 93 days
  daily_energy     fleet.daily_energy over 365 local days (Europe/Amsterdam)
  daily_kolkata    fleet.daily_energy over 365 local days in Asia/Kolkata (midnight inside an hour)
  first_call_daily fleet.daily_energy over 365 days as the first call on a new connection
                   (planning included: generic plans, so it does not grow with the range)
  http_hourly      GET …/hourly over 93 days through ingestd (JSON): from the request to the
                   answer's last byte, a new connection each time (urllib); the client's
                   json.loads of the answer is timed apart (~1 MB for 93 days of hours: 10-20 ms
                   of the bench's own CPU, printed as client_json)
  http_daily       GET …/daily over 365 days through ingestd (JSON)
  http_customer_year  GET …/{code}/energy?resolution=day over 365 days: every device of the
                   customer summed (all --devices devices are on one site)
  http_site_demand GET …/sites/1/demand for one calendar month, 15-minute peak of the site

Every answer of the after phase is compared with the before phase's (floats to 1e-9 relative,
everything else exactly); the run fails when one differs. The targets printed are issue 23's
(p95 <= 50 ms for one device, <= 500 ms for a 50-device customer's year of days, >= 10 M rows).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import subprocess
import sys
import time
import types
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from common import IngestdProcess, create_central_database, exit_on_sigterm, machine_info
from energy_history import asyncio_run, backfill_stored_energy, build_history
from fleetdev.pgcluster import temporary_cluster
from ingestd.customers import add_customer
from ingestd.storage.energy import ENERGY_FUNCTIONS
from ingestd.storage.energy_upkeep import timescale_store
from ingestd.storage.layout import STORED_TABLE
from ingestd.storage.stored_energy import stored_energy_functions
from ingestd.storage.totals import TOTALS_FUNCTIONS
from report import Figure, Target, finish

ADMIN = "bench-admin-" + "x" * 32
# ingestd's pool in the after phase (its default maximum), opened in full so that warming reaches
# each connection and a long read finds one idle to split its work over (ingestd.handlers); the
# before phase's ingestd has one connection: no split, each read on one connection as before
POOL = 4
ROOT = Path(__file__).resolve().parent.parent
STORED_ENERGY_PY = "services/ingestd/src/ingestd/storage/stored_energy.py"


def _percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {
        "p50_ms": round(1000 * statistics.median(ordered), 2),
        "p95_ms": round(1000 * p95, 2),
        "max_ms": round(1000 * ordered[-1], 2),
        "n": len(ordered),
    }


def _baseline_ref(given: str | None) -> str:
    """The commit whose read functions are 'before': given, or the parent of the commit that
    added the stored energy (HEAD when it is not committed yet)."""
    if given:
        return given
    added = subprocess.run(
        ["git", "log", "--diff-filter=A", "--format=%H", "-n1", "--", STORED_ENERGY_PY],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    return f"{added}^" if added else "HEAD"


def _module_at(ref: str, path: str, name: str) -> types.ModuleType:
    source = subprocess.run(["git", "show", f"{ref}:{path}"], cwd=ROOT, capture_output=True,
                            text=True, check=True).stdout  # fmt: skip
    module = types.ModuleType(name)
    exec(compile(source, f"{ref}:{path}", "exec"), module.__dict__)  # noqa: S102 - our own git history
    return module


def _functions_at(ref: str) -> tuple[str, ...]:
    """The read functions (energy, totals) as `ref` made them."""
    base = "services/ingestd/src/ingestd/storage/"
    energy = _module_at(ref, base + "energy.py", "baseline_energy")
    totals = _module_at(ref, base + "totals.py", "baseline_totals")
    return (*energy.ENERGY_FUNCTIONS, *totals.TOTALS_FUNCTIONS)


def _current(dsn: str, timescale: bool) -> tuple[str, ...]:
    """The read functions as this checkout makes them (what the bootstrap creates)."""
    where = (
        asyncio_run(timescale_store, dsn) if timescale else {"stored_hours": "fleet.hourly_rollup"}
    )
    return (*ENERGY_FUNCTIONS, *stored_energy_functions(**where), *TOTALS_FUNCTIONS)


def _timed(
    reps: int,
    call: Callable[[random.Random], object],
    warm: int = 1,
    decode: Callable[[Any], object] | None = None,
) -> tuple[dict[str, float], list[object]]:
    """p50/p95 of `reps` calls after `warm` calls of the first window (which plan the functions
    on the connection(s) and bring the pages into memory: the first call on a connection is
    measured apart, `first_call_daily`), and every answer. With `decode`, each answer is decoded
    after its call's time is taken, and the decoding timed apart (`client_json_*`: the bench
    client's own `json.loads`, not the server's latency)."""
    rnd = random.Random(7)
    answers = [call(random.Random(7)) for _ in range(warm)]
    samples, decoding = [], []
    for _ in range(reps):
        started = time.perf_counter()
        answer = call(rnd)
        samples.append(time.perf_counter() - started)
        if decode is not None:
            started = time.perf_counter()
            answer = decode(answer)
            decoding.append(time.perf_counter() - started)
        answers.append(answer)
    figures = _percentiles(samples)
    if decode is not None:
        answers[:warm] = [decode(a) for a in answers[:warm]]
        client = _percentiles(decoding)
        figures |= {"client_json_p50_ms": client["p50_ms"], "client_json_p95_ms": client["p95_ms"]}
    return figures, answers


def _same(a: Any, b: Any) -> bool:
    """Equal answers: floats to 1e-9 relative (the sums run in another order), the rest exactly."""
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return bool(a == b)


def _phase(
    dsn: str, customer: int, args: argparse.Namespace, origin: datetime, base_url: str
) -> tuple[dict[str, dict[str, float]], dict[str, list[object]]]:
    results: dict[str, dict[str, float]] = {}
    answers: dict[str, list[object]] = {}

    def window(rnd: random.Random, days: int) -> tuple[int, datetime, datetime]:
        start = origin + timedelta(hours=rnd.randrange(0, (args.days - days) * 24))
        return rnd.randrange(1, args.devices + 1), start, start + timedelta(days=days)

    with psycopg.connect(dsn, autocommit=True) as conn:

        def sql(
            query: str, days: int, zone: str | None = None
        ) -> Callable[[random.Random], object]:
            def run(rnd: random.Random) -> object:
                device, start, end = window(rnd, days)
                if zone:
                    params: tuple[Any, ...] = (customer, device, start.date(), end.date(), zone)
                else:
                    params = (customer, device, start, end)
                return conn.execute(query, params).fetchall()

            return run

        hourly = "SELECT * FROM fleet.hourly_energy(%s, %s, %s, %s)"
        daily = "SELECT * FROM fleet.daily_energy(%s, %s, %s, %s, %s)"
        for name, call in (
            ("hourly_view", sql("""SELECT bucket, samples, p_total_avg, p_total_min, p_total_max, v1_avg,
                          v2_avg, v3_avg, i1_avg, i2_avg, i3_avg, pf_total_avg, freq_avg
                   FROM fleet.hourly_per_device
                   WHERE customer_id = %s AND device_id = %s AND bucket >= %s AND bucket < %s
                   ORDER BY bucket""", 93)),
            ("hourly_energy", sql(hourly, 93)),
            ("daily_energy", sql(daily, 365, "Europe/Amsterdam")),
            ("daily_kolkata", sql(daily, 365, "Asia/Kolkata")),
        ):  # fmt: skip
            results[name], answers[name] = _timed(args.reps, call)

    def first_call(rnd: random.Random) -> object:
        device, start, end = window(rnd, 365)
        with psycopg.connect(dsn, autocommit=True) as fresh:
            params = (customer, device, start.date(), end.date(), "Europe/Amsterdam")
            return fresh.execute(daily, params).fetchall()

    results["first_call_daily"], answers["first_call_daily"] = _timed(
        max(3, args.reps // 3), first_call
    )

    def http(kind: str, days: int) -> Callable[[random.Random], object]:
        def run(rnd: random.Random) -> object:
            device, start, end = window(rnd, days)
            base = f"{base_url}/api/fleet/customers/BENCH"
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
            with urllib.request.urlopen(request, timeout=300) as resp:  # noqa: S310 - loopback
                return resp.read()  # the whole body: decoded after the time is taken

        return run

    for name, call, reps in (
        ("http_hourly", http("hourly", 93), args.reps),
        ("http_daily", http("daily", 365), args.reps),
        ("http_customer_year", http("customer", 365), max(3, args.reps // 5)),
        ("http_site_demand", http("demand", 31), max(3, args.reps // 5)),
    ):
        # the pool hands its POOL connections out in turn (or the same one again): warm each
        results[name], answers[name] = _timed(reps, call, warm=POOL + 1, decode=json.loads)
    return results, answers


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=50)
    parser.add_argument("--days", type=int, default=370)
    parser.add_argument("--interval-s", type=int, default=150)
    parser.add_argument("--reps", type=int, default=30)
    parser.add_argument("--baseline", default=None, help="git ref of the 'before' functions")
    parser.add_argument("--timescale", action="store_true", help="TimescaleDB path")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.days < 366:
        parser.error("--days must be at least 366 (a one-year daily query)")
    exit_on_sigterm()
    baseline = _baseline_ref(args.baseline)
    before_functions = _functions_at(baseline)
    origin = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(
        days=args.days + 2
    )
    rows = args.devices * args.days * 86400 // args.interval_s
    print(f"read latency: {args.devices} devices x {args.days} days every {args.interval_s} s = "
          f"{rows:,} rows; before = {baseline}")  # fmt: skip
    wall = time.perf_counter()
    with temporary_cluster(prefix="fleet-bench-read-", timescaledb=args.timescale) as cluster:
        dsn = create_central_database(cluster, timescale=args.timescale)
        add_customer(dsn, "BENCH", "read latency")
        with psycopg.connect(dsn) as conn:
            (customer,) = conn.execute(
                "SELECT id FROM fleet.customers WHERE code = 'BENCH'"
            ).fetchone() or (0,)
            conn.execute(  # the devices full set, as a pusher sends it
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
        build = build_history(dsn, customer, args, origin)
        build["backfill_s"] = backfill_stored_energy(dsn, args.timescale)
        build["build_s"] = time.perf_counter() - wall
        print("  " + ", ".join(f"{k} {v:.0f}" for k, v in build.items()), flush=True)
        with psycopg.connect(dsn, autocommit=True) as conn:
            (stored,) = conn.execute(f"SELECT count(*) FROM {STORED_TABLE}").fetchone() or (0,)
            (hours,) = conn.execute("SELECT count(*) FROM fleet.energy_hours").fetchone() or (0,)
            (size,) = conn.execute(
                "SELECT pg_total_relation_size('fleet.energy_hours')"
            ).fetchone() or (0,)
        phases: dict[str, dict[str, dict[str, float]]] = {}
        answers: dict[str, dict[str, list[object]]] = {}
        for phase, functions, pool in (
            ("before", before_functions, 1),
            ("after", _current(dsn, args.timescale), POOL),
        ):
            with psycopg.connect(dsn, autocommit=True) as conn:
                for statement in functions:
                    conn.execute(statement)
            env = {
                "INGESTD_ADMIN_TOKEN": ADMIN,
                "INGESTD_TIMESCALEDB": "on" if args.timescale else "off",
                "INGESTD_POOL_MIN_SIZE": str(pool),
                "INGESTD_POOL_MAX_SIZE": str(pool),
            }
            print(f"  {phase} ...", flush=True)
            with IngestdProcess(dsn, env) as ingestd:
                phases[phase], answers[phase] = _phase(dsn, customer, args, origin,
                                                       ingestd.base_url)  # fmt: skip
        info = machine_info(dsn)
    differ = [name for name in answers["after"]
              if not _same(answers["before"][name], answers["after"][name])]  # fmt: skip
    compared = sum(len(a) for a in answers["after"].values())
    print(f"\n{'query':<20}{'before p50':>12}{'p95':>10}{'after p50':>12}{'p95':>10}")
    for name, after in phases["after"].items():
        before = phases["before"][name]
        print(f"{name:<20}{before['p50_ms']:>12.1f}{before['p95_ms']:>10.1f}"
              f"{after['p50_ms']:>12.1f}{after['p95_ms']:>10.1f}")  # fmt: skip
    for name, after in phases["after"].items():
        if "client_json_p95_ms" in after:
            print(f"  {name}: the bench client's json.loads of the answer (not timed above) "
                  f"p50 {after['client_json_p50_ms']:.1f} / p95 {after['client_json_p95_ms']:.1f} ms")  # fmt: skip
    print(f"\nanswers compared: {compared}, differing queries: {differ or 'none'}")
    print(f"stored energy: {hours:,} device-hours, {size / max(hours, 1):.0f} B each; "
          f"backfill {build['backfill_s']:.0f} s; whole run {time.perf_counter() - wall:.0f} s")  # fmt: skip
    payload = {
        "config": vars(args) | {"json": str(args.json) if args.json else None},
        "baseline": baseline,
        "rows": stored,
        "stored_hours": hours,
        "stored_bytes": size,
        "build_seconds": build,
        "queries": phases["after"],
        "before": phases["before"],
        "answers_compared": compared,
        "answers_differ": differ,
        "seconds": time.perf_counter() - wall,
        "machine": info,
        "note": "the machine may have been shared with other work: compare within one run",
    }
    finish("read-latency", payload, figures(payload), args.json)
    return 1 if differ else 0


def figures(result: dict[str, Any]) -> list[Figure]:
    """The p95 of each energy answer against issue 23's targets (one device: 50 ms; a 50-device
    customer's year of days: 500 ms — with fewer devices the figure is not comparable), with
    the before phase's p95 beside it."""
    q, b = result["queries"], result["before"]
    devices = result["config"]["devices"]
    out = []
    for name, label, bound in (
        ("http_hourly", "read p95: 93-day hourly, one device (HTTP)", 50.0),
        ("http_daily", "read p95: 1-year daily, one device (HTTP)", 50.0),
        ("http_customer_year", f"read p95: 1-year daily, customer of {devices} devices (HTTP)",
         500.0),
        ("hourly_energy", "read p95: 93-day hourly energy (SQL)", None),
        ("daily_energy", "read p95: 1-year daily energy (SQL)", None),
        ("daily_kolkata", "read p95: 1-year daily energy, Asia/Kolkata (SQL)", None),
        ("first_call_daily", "read p95: 1-year daily, first call on a connection (SQL)", None),
        ("http_site_demand", f"read p95: a month's 15-min peak demand, site of {devices} (HTTP)",
         None),
    ):  # fmt: skip
        measured = f"{q[name]['p95_ms']:.0f} ms"
        spread = f"before {b[name]['p95_ms']:.0f} ms; {result['rows']:,} rows"
        if bound is None:
            out.append(Figure.of(label, measured, spread, "(reported)"))
        else:
            target = Target("<=", bound, " ms", of="p95")
            out.append(Figure.checked(label, q[name]["p95_ms"], measured, target, spread))
    out.append(Figure.of("answers after = before", "same" if not result["answers_differ"]
                         else f"differ: {', '.join(result['answers_differ'])}",
                         f"{result['answers_compared']} answers", "all same",
                         not result["answers_differ"]))  # fmt: skip
    return out


if __name__ == "__main__":
    sys.exit(main())
