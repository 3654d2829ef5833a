"""What the stored energy's upkeep costs on TimescaleDB: the backfill, and an hour's end.

    uv run python bench/stored_energy_upkeep.py [--devices 500] [--hours 12] [--chunk-hours 16]
                                                [--baseline REF]

At an hour's end every device's frontier step is due (docs/ENERGY.md, "The stored energy"): at
10,000 gateways ~276,000 of them, beside the refresh of every device's last hour and the store
that follows it (`ingestd.storage.rollup.refresh_timescale`). This bench fills `--hours` ended
hours (and the current one up to now) of one-a-minute samples for `--devices` meters on a
TimescaleDB central database (written straight into the stored table, the aggregates refreshed
up to the last ended hour, as the policy leaves them), then, for the functions of `--baseline`
(default: the commit before the store became set-based, `fleet.store_energy_set`) and of this
checkout, each on a copy of that database:

- the backfill: every device's history stored by the housekeeping's own `advance_stored_energy`
  (rounds of `--batch` device-hours) — PostgreSQL CPU per device-hour stored;
- an hour's end: every device's last hour marked as its batches mark it, then the housekeeping's
  rounds (`--batch` each) of `refresh_timescale` (the refresh and the store of the spans it can
  move) until nothing is marked, and of `advance_stored_energy` until every frontier is at the
  current hour — PostgreSQL CPU per device of each, the rounds' clock time, and what
  `--gateways` (27.6 meters each) would cost an hour at that rate;

and compares what both stored (`fleet.energy_hours`, every row): the answers must be equal.
Skipped with the reason where TimescaleDB is not installed. CPU from /proc (PostgreSQL's
processes); timing figures depend on the machine's load: the load average is printed.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import subprocess
import sys
import time
import types
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
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
from fleetdev.pgcluster import PgCluster, temporary_cluster, timescaledb_installed
from ingestd.storage import rollup
from psycopg import AsyncConnection
from report import Figure, finish

ROOT = Path(__file__).resolve().parents[1]
STORED_ENERGY_PY = "services/ingestd/src/ingestd/storage/stored_energy.py"
ENERGY_UPKEEP_PY = "services/ingestd/src/ingestd/storage/energy_upkeep.py"
REVISIONS_PY = "services/ingestd/src/ingestd/storage/revisions.py"
METERS_PER_GATEWAY = 27.6
HOUR = timedelta(hours=1)

CUSTOMERS = synthetic_customers_sql("SE", "Upkeep")
# One-a-minute samples from `start` to `end`, registers rising at a rate of each device's own.
FILL = synthetic_fill_sql("%(start)s", "%(minutes)s", "(3 + d.n %% 5)")
REFRESH = "CALL refresh_continuous_aggregate(%s, %s, %s)"
CHUNKS = "SELECT set_chunk_time_interval('fleet.power_measurements_scaled', %s::interval)"
NO_JOBS = "SELECT alter_job(job_id, scheduled => false) FROM timescaledb_information.jobs"
SEED = """INSERT INTO fleet.energy_frontier (customer_id, device_id)
          SELECT DISTINCT customer_id, device_id FROM fleet.power_measurements_scaled"""
# Every device's last ended hour, marked as its batches would have (an hour ago: settled).
MARK = """
INSERT INTO fleet.hourly_dirty (customer_id, device_id, bucket, marked_at)
SELECT customer_id, device_id, %s, now() - INTERVAL '1 hour' FROM fleet.energy_frontier
ON CONFLICT DO NOTHING
"""
# What reads take from the store: the hours before each device's live hour.
STORED = """SELECT customer_id, device_id, bucket, energy_imp_kwh, energy_exp_kwh,
                   energy_q_imp_kvarh, energy_q_exp_kvarh, energy_reset, max_spacing_s, samples
            FROM fleet.energy_hours WHERE bucket < fleet.energy_live_from(customer_id, device_id)
            ORDER BY 1, 2, 3"""
TERMINATE = """SELECT pg_terminate_backend(pid) FROM pg_stat_activity
               WHERE datname = %s AND pid <> pg_backend_pid()"""
FRONTIERS = "SELECT min(stored_until), max(stored_until) FROM fleet.energy_frontier"


def fill(
    dsn: str, customers: int, devices: int, start: datetime, end: datetime, chunk_hours: int = 16
) -> int:
    """The samples (in raw chunks of `chunk_hours`), the aggregates refreshed before the last
    ended hour, the frontiers."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(CHUNKS, (timedelta(hours=chunk_hours),))
        ids = [row[0] for row in conn.execute(CUSTOMERS, (customers,)).fetchall()]
        minutes = int((end - start) / timedelta(minutes=1))
        conn.execute(FILL, {"ids": ids, "devices": devices, "start": start, "minutes": minutes})
        conn.execute("ANALYZE fleet.power_measurements_scaled")
        last_ended = end.replace(minute=0, second=0, microsecond=0) - HOUR
        for view in ("fleet.hourly_per_device", "fleet.quarter_per_device"):
            conn.execute(REFRESH, (view, start, last_ended))
        conn.execute(NO_JOBS)
        conn.execute(SEED)
        row = conn.execute("SELECT count(*) FROM fleet.power_measurements_scaled").fetchone()
    return int(row[0]) if row else 0


def clone(cluster: PgCluster, template: str, name: str) -> str:
    """A copy of `template`; TimescaleDB's scheduler may still be connected to it: its sessions
    are ended first (a few tries, then the error)."""
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        for attempt in range(5):
            conn.execute(TERMINATE, (template,))
            try:
                conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
                break
            except psycopg.errors.ObjectInUse:
                if attempt == 4:
                    raise
                time.sleep(0.5)
    return cluster.dsn(name)


def baseline_ref(given: str | None) -> str:
    """`given`, or the parent of the commit that made the store set-based
    (`fleet.store_energy_set`; HEAD while that is not committed)."""
    if given:
        return given
    made = subprocess.run(
        ["git", "log", "-S", "store_energy_set", "--reverse", "--format=%H", "--",
         STORED_ENERGY_PY],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    return f"{made[0]}^" if made else "HEAD"


def _source_at(ref: str, path: str) -> str | None:
    shown = subprocess.run(["git", "show", f"{ref}:{path}"], cwd=ROOT, capture_output=True,
                           text=True, check=False)  # fmt: skip
    return shown.stdout if shown.returncode == 0 else None


def module_at(ref: str) -> types.ModuleType:
    """The store as `ref` had it, one module: `ingestd.storage.stored_energy` and, where `ref`
    has it, the upkeep split from it later (`ingestd.storage.energy_upkeep`), which imports
    `ingestd.storage.revisions` as `ref` had it too."""
    module = types.ModuleType("baseline_stored_energy")
    source = _source_at(ref, STORED_ENERGY_PY)
    if source is None:
        raise SystemExit(f"{ref} has no {STORED_ENERGY_PY}")
    exec(compile(source, f"{ref}:{STORED_ENERGY_PY}", "exec"), module.__dict__)  # noqa: S102 - our own git history
    upkeep, revisions = _source_at(ref, ENERGY_UPKEEP_PY), _source_at(ref, REVISIONS_PY)
    if upkeep is not None and revisions is not None:
        old = types.ModuleType("ingestd.storage.revisions")
        exec(compile(revisions, f"{ref}:{REVISIONS_PY}", "exec"), old.__dict__)  # noqa: S102
        kept = sys.modules["ingestd.storage.revisions"]
        sys.modules["ingestd.storage.revisions"] = old
        try:
            exec(compile(upkeep, f"{ref}:{ENERGY_UPKEEP_PY}", "exec"), module.__dict__)  # noqa: S102
        finally:
            sys.modules["ingestd.storage.revisions"] = kept
    return module


def current_module() -> types.ModuleType:
    """This tree's store as one module, as `module_at` gives an older one: its functions
    (`ingestd.storage.stored_energy`) and its upkeep (`ingestd.storage.energy_upkeep`, split
    from the same file later)."""
    from ingestd.storage import energy_upkeep, stored_energy

    module = types.ModuleType("stored_energy")
    for part in (stored_energy, energy_upkeep):
        module.__dict__.update({name: getattr(part, name) for name in part.__all__})
    return module


async def install(conn: AsyncConnection[Any], module: types.ModuleType) -> None:
    """The store's functions as `module` makes them for the TimescaleDB path."""
    where = (await module.timescale_store(conn) if hasattr(module, "timescale_store")
             else {"stored_hours": "fleet.hourly_per_device"})  # fmt: skip
    for statement in module.stored_energy_functions(**where):
        await conn.execute(statement)


async def rounds(
    cluster: PgCluster, step: Callable[[], Awaitable[int]], limit_s: float
) -> dict[str, Any]:
    """Run `step` until it does nothing (or `limit_s` passes): work done, CPU, clock per round."""
    done, walls, cpu0, started = 0, [], postgres_cpu_seconds(cluster), time.perf_counter()
    while time.perf_counter() - started < limit_s:
        t0 = time.perf_counter()
        n = await step()
        if not n:
            break
        done += n
        walls.append(time.perf_counter() - t0)
    return {"work": done, "rounds": len(walls), "pg_cpu_s": postgres_cpu_seconds(cluster) - cpu0,
            "wall_s": time.perf_counter() - started, "round_max_s": max(walls, default=0.0),
            "finished": time.perf_counter() - started < limit_s}  # fmt: skip


async def measure(
    cluster: PgCluster, dsn: str, module: types.ModuleType, args: argparse.Namespace,
    end: datetime,
) -> dict[str, Any]:  # fmt: skip
    """The backfill, then an hour's end, with `module`'s functions."""
    last_ended = end.replace(minute=0, second=0, microsecond=0) - HOUR
    async with await AsyncConnection.connect(dsn, autocommit=True) as conn:
        await install(conn, module)

        async def backfill() -> int:
            moved: int = await module.advance_stored_energy(
                conn, settle_s=0.0, budget_hours=args.batch, hold=False, now=last_ended
            )
            return moved

        filled = await rounds(cluster, backfill, args.limit_s)
        cur = await conn.execute("SELECT count(*) FROM fleet.energy_hours")
        row = await cur.fetchone()
        filled["device_hours"] = int(row[0]) if row else 0
        await conn.execute(MARK, (last_ended,))

        async def refresh() -> int:
            # the refresh's store of the spans as `module` has it (its SQL functions installed)
            kept = rollup.store_spans
            rollup.store_spans = getattr(module, "store_spans", kept)
            try:
                report = await rollup.refresh_timescale(conn, settle_s=0.0, limit=args.batch)
                return report.buckets
            finally:
                rollup.store_spans = kept

        async def advance() -> int:
            moved: int = await module.advance_stored_energy(
                conn, settle_s=0.0, budget_hours=args.batch, hold=False, now=end
            )
            return moved

        refreshed = await rounds(cluster, refresh, args.limit_s)
        stepped = await rounds(cluster, advance, args.limit_s)
        cur = await conn.execute(FRONTIERS)
        frontiers = await cur.fetchone()
        cur = await conn.execute(STORED)
        stored = await cur.fetchall()
    stepped["frontiers"] = [str(x) for x in frontiers or ()]
    return {"backfill": filled, "refresh": refreshed, "steps": stepped, "stored": stored}


def same(a: Sequence[tuple[Any, ...]], b: Sequence[tuple[Any, ...]]) -> bool:
    """Equal stored rows: floats to 1e-9 relative (the sums may run in another order)."""

    def eq(u: Any, v: Any) -> bool:
        if isinstance(u, float) and isinstance(v, float):
            return math.isclose(u, v, rel_tol=1e-9, abs_tol=1e-9)
        return bool(u == v)

    return len(a) == len(b) and all(
        all(eq(u, v) for u, v in zip(x, y, strict=True)) for x, y in zip(a, b, strict=True)
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--devices", type=int, default=500, help="meters")
    parser.add_argument("--customers", type=int, default=20)
    parser.add_argument("--hours", type=int, default=12, help="ended hours of history")
    parser.add_argument("--chunk-hours", type=int, default=16,
                        help="raw chunk interval (INGESTD_CHUNK_INTERVAL_HOURS): more chunks, "
                        "as a long history has")  # fmt: skip
    parser.add_argument("--batch", type=int, default=5000, help="INGESTD_ROLLUP_BATCH")
    parser.add_argument("--baseline", help="git ref of the 'before' functions")
    parser.add_argument("--limit-s", type=float, default=900.0, help="per phase, per variant")
    parser.add_argument("--gateways", type=int, default=10_000, help="the fleet to extrapolate to")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if not (1 <= args.customers <= args.devices and args.hours >= 2 and args.batch >= 1
            and args.chunk_hours >= 1):  # fmt: skip
        print("need 1 <= customers <= devices, --hours >= 2, --batch >= 1, --chunk-hours >= 1",
              file=sys.stderr)  # fmt: skip
        return 2
    if not timescaledb_installed():
        print("SKIPPED: TimescaleDB is not installed on this machine's PostgreSQL", file=sys.stderr)
        return 0
    exit_on_sigterm()
    ref = baseline_ref(args.baseline)
    variants = {f"before ({ref})": module_at(ref), "after (this checkout)": None}
    started = time.monotonic()
    now = datetime.now(UTC)
    start = now.replace(minute=0, second=0, microsecond=0) - args.hours * HOUR
    with temporary_cluster(prefix="fleet-bench-upkeep-", timescaledb=True) as cluster:
        template = create_central_database(cluster, "upkeep_template", timescale=True)
        machine = machine_info(template)
        rows = fill(template, args.customers, args.devices, start, now, args.chunk_hours)
        print(f"  {rows:,} rows: {args.devices:,} meters x {args.hours} hours and this one",
              file=sys.stderr)  # fmt: skip
        runs: dict[str, dict[str, Any]] = {}
        for i, (name, module) in enumerate(variants.items()):
            dsn = clone(cluster, "upkeep_template", f"upkeep_{i}")
            runs[name] = asyncio.run(measure(cluster, dsn, module or current_module(), args, now))
            b, r, h = (runs[name][k] for k in ("backfill", "refresh", "steps"))
            print(f"  {name}: backfill {b['device_hours']:,} device-hours, {b['pg_cpu_s']:.1f} s "
                  f"PostgreSQL CPU; hour's end: refresh + store {r['pg_cpu_s']:.1f} s, frontier "
                  f"steps {h['pg_cpu_s']:.1f} s in {h['rounds']} rounds (longest "
                  f"{h['round_max_s']:.1f} s), frontiers {h['frontiers']}", file=sys.stderr)  # fmt: skip
    stored = [run.pop("stored") for run in runs.values()]
    equal = same(stored[0], stored[1])
    figures = []
    for name, run in runs.items():
        b = run["backfill"]
        per_hour = 1000 * b["pg_cpu_s"] / max(1, b["device_hours"])
        figures.append(Figure.of(
            f"{name}: backfill, PostgreSQL CPU per device-hour stored", f"{per_hour:.2f} ms",
            f"{1000 * b['wall_s'] / max(1, b['device_hours']):.2f} ms by the clock; "
            f"{b['device_hours']:,} device-hours in {b['rounds']} rounds"
            + ("" if b["finished"] else f"; STOPPED at --limit-s {args.limit_s:g}"),
        ))  # fmt: skip
        for key, what in (("refresh", "refresh of the last hour + its store"),
                          ("steps", "frontier steps")):  # fmt: skip
            h = run[key]
            per_device = 1000 * h["pg_cpu_s"] / args.devices
            fleet_s = args.gateways * METERS_PER_GATEWAY * per_device / 1000
            figures.append(Figure.of(
                f"{name}: an hour's end, {what}: PostgreSQL CPU per device",
                f"{per_device:.2f} ms",
                f"{h['wall_s']:.1f} s by the clock for {args.devices:,} devices in "
                f"{h['rounds']} rounds (longest {h['round_max_s']:.1f} s); at "
                f"{args.gateways:,} gateways {fleet_s:,.0f} s of PostgreSQL CPU an hour "
                f"({100 * fleet_s / 3600:.1f} % of a core)"
                + ("" if h["finished"] else f"; STOPPED at --limit-s {args.limit_s:g}"),
            ))  # fmt: skip
    figures.append(Figure.of("stored energy equal before and after", "yes" if equal else "NO",
                             f"{len(stored[1]):,} device-hours compared"))  # fmt: skip
    result = {
        "benchmark": "stored_energy_upkeep",
        "rows": rows,
        "runs": runs,
        "equal": equal,
        "config": {k: v for k, v in vars(args).items() if k != "json"} | {"baseline": ref},
        "machine": machine,
        "loadavg": Path("/proc/loadavg").read_text().split()[:3],
        "runtime_s": time.monotonic() - started,
    }
    print(f"  load average {' '.join(result['loadavg'])}", file=sys.stderr)
    finish("stored_energy_upkeep", result, figures, args.json)
    return 0 if equal else 1


if __name__ == "__main__":
    sys.exit(main())
