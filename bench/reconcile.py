"""Reconciliation's cost (issue 21): bytes per gateway per day in steady state, CPU per pass on
each side, time to repair a lost day.

    uv run python bench/reconcile.py [--meters 50] [--days 35] [--bytes-meters 27] [--quick]

Two throwaway clusters, a customer's (meter stack) and the centre's (plain PostgreSQL path), and
a real `ingestd serve`. The same rows — one sample a minute per meter — are generated in both
databases by the same SQL, as after a push (the gateway's push state says all of them were
shipped), so passes start in sync. The pass is the pusher's own (`pusher.reconcile.run_pass`,
in this process, through a counting TCP proxy: every upstream byte, request lines and headers
included; answers counted by the client, headers included).

1. steady state: `--bytes-meters` meters (27), an in-sync pass — what the daemon sends every hour
   — measured in bytes; x 24 passes per day against the measurement bytes a day of one sample a
   minute per meter costs on the wire (`--row-bytes` per row, 51 by default: bench/wire.py's
   steady-state columnar figure — body 40.0, full sets 0.9 — with the ~273 header bytes of a
   request spread over 27 rows instead of 20);
2. CPU: `--meters` x `--days` (50 x 35: 2.5 M rows), an in-sync pass: CPU of this process (the
   pusher's part), of the customer cluster, of ingestd and of the central cluster;
3. repair: one whole day of every meter deleted centrally, then a pass: its wall time, the rows
   re-sent and stored again, and the CPU on each side.

Timing and CPU figures depend on the machine and its load; bytes do not.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from common import (
    IngestdProcess,
    cpu_seconds,
    create_central_database,
    exit_on_sigterm,
    machine_info,
    postgres_cpu_seconds,
)
from counting_proxy import CountingProxy
from fleetcore import PushCursor
from fleetcore.protocol import INGEST_PATH, WireFormat
from fleetdev.pgcluster import PgCluster, temporary_cluster
from ingestd.customers import add_customer
from ingestd.storage.partitions import ensure_partitions
from pusher.delivery import IngestClient
from pusher.migrate import apply_migrations
from pusher.reconcile import PassReport, run_pass
from pusher.state import load_states
from report import Figure, Target, finish

CUSTOMER = "BENCH_RECON"
TARGET_SHARE = Target("<=", 2.0, " %", of="reconciliation / measurement bytes")

CUSTOMER_ROWS = """
INSERT INTO monitoring.power_measurements (device_id, time, v1, p_total, energy_imp_kwh)
SELECT d, %(start)s + make_interval(mins => m), 230.0, 1.5, 1000.0 + m
FROM generate_series(1, %(meters)s) AS d, generate_series(0, %(minutes)s - 1) AS m
"""
CENTRAL_ROWS = """
INSERT INTO fleet.power_measurements_scaled (time, customer_id, device_id, received_at)
SELECT %(start)s + make_interval(mins => m), %(customer)s, d, now()
FROM generate_series(1, %(meters)s) AS d, generate_series(0, %(minutes)s - 1) AS m
"""
LAST_KEY = """
SELECT push_xid::text, device_id, time FROM monitoring.power_measurements
ORDER BY push_xid DESC, device_id DESC, time DESC LIMIT 1
"""
ENSURE_STATE = """
INSERT INTO app.fleet_push_state (resource, batch_size) VALUES ('measurements', 5000)
ON CONFLICT (resource) DO NOTHING
"""
SHIPPED = """
UPDATE app.fleet_push_state SET cursor = %s, last_success_at = now()
WHERE resource = 'measurements'
"""


def _customer_id(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT id FROM fleet.customers WHERE code = %s", (CUSTOMER,)).fetchone()
    assert row is not None
    return int(row[0])


async def _weeks(dsn: str, start: datetime, days: int) -> None:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await ensure_partitions(conn, [start + timedelta(days=d) for d in range(0, days + 8, 7)])


def load(customer_dsn: str, central_dsn: str, meters: int, days: int) -> int:
    """The same rows on both sides, all shipped; returns how many."""
    start = (datetime.now(UTC) - timedelta(days=days)).replace(minute=0, second=0, microsecond=0)
    params = {"start": start, "meters": meters, "minutes": days * 1440}
    asyncio.run(_weeks(central_dsn, start, days))
    with psycopg.connect(customer_dsn) as conn:
        conn.execute("TRUNCATE monitoring.power_measurements")
        rows = conn.execute(CUSTOMER_ROWS, params).rowcount
    with psycopg.connect(central_dsn) as conn:
        conn.execute(
            "DELETE FROM fleet.power_measurements_scaled WHERE customer_id = %s",
            (_customer_id(central_dsn),),
        )
        conn.execute(CENTRAL_ROWS, {**params, "customer": _customer_id(central_dsn)})
    with psycopg.connect(customer_dsn, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE monitoring.power_measurements")
        xid, device, when = conn.execute(LAST_KEY).fetchone() or (0, 0, start)
        conn.execute(ENSURE_STATE)
        conn.execute(SHIPPED, (PushCursor(int(xid), device, when).encode(),))
        conn.execute("DELETE FROM app.fleet_reconcile_known")
    with psycopg.connect(central_dsn, autocommit=True) as conn:
        conn.execute("ANALYZE fleet.power_measurements_scaled")
    return rows


async def _pass(customer_dsn: str, url: str, token: str) -> PassReport:
    async with (
        await psycopg.AsyncConnection.connect(customer_dsn, autocommit=True) as conn,
        IngestClient(url, token, timeout_s=600) as client,
    ):
        await load_states(conn, 5000)
        client.negotiation.remember(WireFormat.COLUMNAR)
        return await run_pass(conn, client, horizon=timedelta(days=3660), batch_size=5000)


def measured_pass(
    customer: PgCluster,
    central: PgCluster,
    ingestd: IngestdProcess,
    customer_dsn: str,
    proxy: CountingProxy,
    token: str,
) -> dict[str, Any]:
    """One pass with its bytes (upstream on the wire, downstream as received) and CPU."""
    before = (
        time.process_time(),
        postgres_cpu_seconds(customer),
        cpu_seconds(ingestd.pid),
        postgres_cpu_seconds(central),
        proxy.upstream_bytes,
    )
    started = time.monotonic()
    report = asyncio.run(_pass(customer_dsn, f"http://127.0.0.1:{proxy.port}{INGEST_PATH}", token))
    wall = time.monotonic() - started
    after = (
        time.process_time(),
        postgres_cpu_seconds(customer),
        cpu_seconds(ingestd.pid),
        postgres_cpu_seconds(central),
        proxy.upstream_bytes,
    )
    return {
        "wall_s": round(wall, 3),
        "pusher_cpu_s": round(after[0] - before[0], 3),
        "customer_db_cpu_s": round(after[1] - before[1], 3),
        "ingestd_cpu_s": round(after[2] - before[2], 3),
        "central_db_cpu_s": round(after[3] - before[3], 3),
        "upstream_bytes": after[4] - before[4],
        "downstream_bytes": report.bytes_received,
        "report": report.as_log(),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    with (
        temporary_cluster(prefix="fleet-bench-recon-customer-") as customer,
        temporary_cluster(prefix="fleet-bench-recon-central-") as central,
    ):
        customer_dsn = customer.create_database("meters")
        apply_migrations(customer_dsn)
        central_dsn = create_central_database(central)
        token = add_customer(central_dsn, CUSTOMER)
        ingestd = IngestdProcess(central_dsn, {"INGESTD_DIGEST_TIMEOUT_S": "600"})
        ingestd.start()
        try:
            with CountingProxy(ingestd.port) as proxy:
                results: dict[str, Any] = {}
                rows = load(customer_dsn, central_dsn, args.bytes_meters, 2)
                steady = measured_pass(customer, central, ingestd, customer_dsn, proxy, token)
                results["steady"] = {"meters": args.bytes_meters, "rows": rows, **steady}
                rows = load(customer_dsn, central_dsn, args.meters, args.days)
                in_sync = measured_pass(customer, central, ingestd, customer_dsn, proxy, token)
                results["in_sync"] = {"meters": args.meters, "days": args.days, "rows": rows}
                results["in_sync"].update(in_sync)
                day = (datetime.now(UTC) - timedelta(days=2)).replace(
                    hour=0, minute=0, second=0, microsecond=0
                )
                with psycopg.connect(central_dsn) as conn:
                    lost = conn.execute(
                        "DELETE FROM fleet.power_measurements_scaled WHERE time >= %s "
                        "AND time < %s + interval '1 day'",
                        (day, day),
                    ).rowcount
                repair = measured_pass(customer, central, ingestd, customer_dsn, proxy, token)
                results["repair"] = {"lost_rows": lost, **repair}
        finally:
            ingestd.stop()
    return results


def figures(results: dict[str, Any], row_bytes: float) -> list[Figure]:
    steady = results["steady"]
    per_pass = steady["upstream_bytes"] + steady["downstream_bytes"]
    per_day = 24 * per_pass
    upstream_day = 24 * steady["upstream_bytes"]
    measurement_day = steady["meters"] * 1440 * row_bytes
    share = 100 * per_day / measurement_day
    in_sync, repair = results["in_sync"], results["repair"]
    return [
        Figure.checked(
            f"steady-state reconciliation bytes per gateway per day ({steady['meters']} meters, "
            "hourly pass, both directions)",
            share,
            f"{per_day:,} B/day = {share:.2f} % of {measurement_day:,.0f} B of measurements",
            TARGET_SHARE,
            f"per pass: {steady['upstream_bytes']} up, {steady['downstream_bytes']} down; "
            f"upstream alone {100 * upstream_day / measurement_day:.2f} %",
        ),
        Figure.of(
            f"CPU per in-sync pass, gateway side ({in_sync['meters']} meters x "
            f"{in_sync['days']} days, {in_sync['rows']:,} rows)",
            f"{in_sync['pusher_cpu_s'] + in_sync['customer_db_cpu_s']:.2f} s",
            f"pusher {in_sync['pusher_cpu_s']} s, customer PostgreSQL "
            f"{in_sync['customer_db_cpu_s']} s; wall {in_sync['wall_s']} s",
        ),
        Figure.of(
            "CPU per in-sync pass, central side (same gateway)",
            f"{in_sync['ingestd_cpu_s'] + in_sync['central_db_cpu_s']:.2f} s",
            f"ingestd {in_sync['ingestd_cpu_s']} s, central PostgreSQL "
            f"{in_sync['central_db_cpu_s']} s",
        ),
        Figure.of(
            f"time to repair a lost day ({repair['lost_rows']:,} rows of {in_sync['meters']} "
            "meters deleted centrally, one pass)",
            f"{repair['wall_s']:.1f} s",
            f"re-sent {repair['report']['rows_resent']:,}, stored again "
            f"{repair['report']['rows_restored']:,}; {repair['upstream_bytes']:,} B up; CPU "
            f"gateway {repair['pusher_cpu_s'] + repair['customer_db_cpu_s']:.1f} s, centre "
            f"{repair['ingestd_cpu_s'] + repair['central_db_cpu_s']:.1f} s",
        ),
    ]


def main(argv: Sequence[str] | None = None) -> int:
    exit_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--meters", type=int, default=50)
    parser.add_argument("--days", type=int, default=35)
    parser.add_argument("--bytes-meters", type=int, default=27)
    parser.add_argument("--row-bytes", type=float, default=51.0)
    parser.add_argument("--quick", action="store_true", help="10 meters x 3 days for the CPU part")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.quick:
        args.meters, args.days = 10, 3
    results = run(args)
    results["machine"] = machine_info()
    results["loadavg"] = Path("/proc/loadavg").read_text().strip()
    print(f"load average: {results['loadavg']}")
    for part in ("steady", "in_sync", "repair"):
        print(part, {k: v for k, v in results[part].items() if k != "report"})
    finish("reconcile", results, figures(results, args.row_bytes), args.json)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
