"""Retention of the audit trail and the customers endpoint at fleet scale.

    uv run python bench/retention.py [--customers 10000] [--events 1440]

One throwaway cluster, the migrated central database, N customers and two days of audit rows
(`--events` measurement batches per customer per day, in arrival order, as ingestd writes them),
the hourly counters filled from them as migration 0005 does. Then:

  customers   the customers endpoint's query, as it was (summing a day of ingest_events per
              customer) and as it is (the hourly counters): p50/p95 of 10 runs each
  delete      `ingestd.storage.retention.apply_retention` with a 1-day retention until nothing is
              left to delete: rows/s, time per 5,000-row batch, and the latency of concurrent
              audit inserts (one every 2 ms) against the same inserts without the deletes
  partition   the same rows in a table partitioned by day: DROP of the old partition, and the
              concurrent inserts' latency while it runs

Results go to bench/results/retention-<time>.json (or --json).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from common import create_central_database, exit_on_sigterm, machine_info
from fleetdev.pgcluster import temporary_cluster
from ingestd.storage.reads import CUSTOMERS
from ingestd.storage.retention import apply_retention
from report import Figure, Target, finish

TARGET_P95 = Target("<", 200.0, " ms")  # the customers endpoint

OLD_CUSTOMERS = """
SELECT c.code, c.name, c.created_at, c.first_seen_at, c.last_seen_at,
       extract(epoch FROM now() - c.last_seen_at)::double precision,
       coalesce((SELECT sum(e.accepted) FROM fleet.ingest_events e
                 WHERE e.customer_id = c.id AND e.batch_type = 'measurements'
                   AND e.received_at > now() - interval '24 hours'), 0)::bigint,
       (SELECT count(*) FROM fleet.rejected_rows r
         WHERE r.customer_id = c.id AND r.received_at > now() - interval '24 hours')
FROM fleet.customers c ORDER BY c.code
"""
CUSTOMERS_SQL = "INSERT INTO fleet.customers (code) SELECT 'C' || lpad(g::text, 6, '0') FROM generate_series(1, %s) g"
# Two days of batches, in arrival order; every customer sends `events` per day.
EVENTS_SQL = """
INSERT INTO fleet.ingest_events (batch_id, customer_id, batch_type, received_at, accepted,
    wire_bytes, body_bytes, duration_ms, outcome, status, min_time, max_time)
SELECT gen_random_uuid(), c.id, 'measurements', t, 27, 3500, 12000, 4.2, 'ok', 200, t, t
FROM generate_series(now() - interval '2 days', now(), make_interval(secs => 86400.0 / %s)) AS t,
     fleet.customers c
ORDER BY t
"""
COUNTS_SQL = """
INSERT INTO fleet.customer_hourly_counts (customer_id, hour, batches, accepted, rejected)
SELECT customer_id, date_trunc('hour', received_at), count(*), sum(accepted), sum(rejected)
FROM fleet.ingest_events WHERE received_at > now() - interval '26 hours' GROUP BY 1, 2
"""
INSERT_ONE = """
INSERT INTO {table} (batch_id, customer_id, batch_type, accepted, wire_bytes, duration_ms, outcome, status)
VALUES (gen_random_uuid(), 1, 'measurements', 27, 3500, 4.2, 'ok', 200)
"""
PARTITIONED = """
CREATE TABLE bench_events (LIKE fleet.ingest_events INCLUDING DEFAULTS) PARTITION BY RANGE (received_at);
CREATE SEQUENCE bench_events_id START 100000000;
ALTER TABLE bench_events ALTER COLUMN id SET DEFAULT nextval('bench_events_id');
CREATE TABLE bench_events_old PARTITION OF bench_events FOR VALUES FROM ('-infinity') TO ('{cut}');
CREATE TABLE bench_events_new PARTITION OF bench_events FOR VALUES FROM ('{cut}') TO ('infinity');
CREATE INDEX ON bench_events (customer_id, received_at DESC);
INSERT INTO bench_events SELECT * FROM fleet.ingest_events;
"""


def _ms(samples: list[float]) -> dict[str, float]:
    s = sorted(samples)
    q = statistics.quantiles(s, n=100, method="inclusive") if len(s) >= 2 else s * 99
    return {"p50_ms": q[49], "p95_ms": q[94], "p99_ms": q[98], "max_ms": s[-1], "n": len(s)}


def time_query(
    conn: psycopg.Connection[Any], query: str, params: Any = None, runs: int = 10
) -> dict[str, float]:
    conn.execute(query, params).fetchall()
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        conn.execute(query, params).fetchall()
        samples.append((time.perf_counter() - started) * 1000)
    return _ms(samples)


async def insert_latency(dsn: str, table: str, stop: asyncio.Event) -> list[float]:
    """One audit insert every 2 ms until `stop`: how long each waits (locks, I/O)."""
    samples: list[float] = []
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        while not stop.is_set():
            started = time.perf_counter()
            await conn.execute(INSERT_ONE.format(table=table))
            samples.append((time.perf_counter() - started) * 1000)
            await asyncio.sleep(0.002)
    return samples


async def with_inserts(dsn: str, table: str, work: Any) -> tuple[Any, list[float], float]:
    stop = asyncio.Event()
    inserts = asyncio.create_task(insert_latency(dsn, table, stop))
    await asyncio.sleep(0.2)
    started = time.perf_counter()
    result = await work()
    elapsed = time.perf_counter() - started
    stop.set()
    return result, await inserts, elapsed


async def deletes(dsn: str) -> dict[str, Any]:
    batches: list[float] = []
    total = 0

    async def work() -> int:
        nonlocal total
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            while True:
                started = time.perf_counter()
                report = await apply_retention(
                    conn, datetime.now(UTC), audit_days=1, rejected_days=1, max_batches=1
                )
                batches.append((time.perf_counter() - started) * 1000)
                total += report.total
                if report.total == 0:
                    return total

    async def idle() -> None:
        await asyncio.sleep(3.0)

    _, quiet, _ = await with_inserts(dsn, "fleet.ingest_events", idle)
    deleted, during, elapsed = await with_inserts(dsn, "fleet.ingest_events", work)
    return {
        "rows_deleted": deleted,
        "seconds": elapsed,
        "rows_per_s": deleted / elapsed if elapsed else None,
        "batch": _ms(batches[:-1] or batches),
        "insert_latency_quiet": _ms(quiet),
        "insert_latency_during": _ms(during),
    }


async def partition_drop(dsn: str) -> dict[str, Any]:
    async def work() -> None:
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            await conn.execute("DROP TABLE bench_events_old")

    _, during, elapsed = await with_inserts(dsn, "bench_events", work)
    return {"seconds": elapsed, "insert_latency_during": _ms(during)}


def run(args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {}
    with temporary_cluster(prefix="fleet-bench-retention-") as cluster:
        dsn = create_central_database(cluster)
        result["machine"] = machine_info(dsn)
        with psycopg.connect(dsn, autocommit=True) as conn:
            started = time.monotonic()
            conn.execute(CUSTOMERS_SQL, (args.customers,))
            conn.execute(EVENTS_SQL, (args.events,))
            conn.execute(COUNTS_SQL)
            conn.execute("VACUUM ANALYZE")
            result["events"] = conn.execute("SELECT count(*) FROM fleet.ingest_events").fetchone()
            result["prepare_s"] = time.monotonic() - started
            print(
                f"  {result['events'][0]:,} audit rows in {result['prepare_s']:.0f} s",
                file=sys.stderr,
            )
            result["customers_before"] = time_query(conn, OLD_CUSTOMERS, runs=args.runs)
            # the endpoint's own query (it also counts stale devices, with the default window)
            result["customers_after"] = time_query(
                conn, CUSTOMERS, (timedelta(minutes=15),), runs=10
            )
            cut = conn.execute("SELECT now() - interval '1 day'").fetchone()
            assert cut is not None
            conn.execute(PARTITIONED.format(cut=cut[0].isoformat()))
        result["delete"] = asyncio.run(deletes(dsn))
        result["partition"] = asyncio.run(partition_drop(dsn))
    return result


def report(result: dict[str, Any], args: argparse.Namespace) -> None:
    before, after = result["customers_before"], result["customers_after"]
    d, p = result["delete"], result["partition"]
    print()
    print(f"{args.customers:,} customers, {result['events'][0]:,} audit rows over two days")
    print(f"customers endpoint query, summing ingest_events: p50 {before['p50_ms']:.0f} ms, "
          f"p95 {before['p95_ms']:.0f} ms")  # fmt: skip
    print(f"customers endpoint query, hourly counters:       p50 {after['p50_ms']:.0f} ms, "
          f"p95 {after['p95_ms']:.0f} ms")  # fmt: skip
    print(f"batched deletes: {d['rows_deleted']:,} rows in {d['seconds']:.1f} s "
          f"({d['rows_per_s']:,.0f} rows/s), batch p50 {d['batch']['p50_ms']:.0f} ms max "
          f"{d['batch']['max_ms']:.0f} ms; concurrent insert p99 {d['insert_latency_during']['p99_ms']:.1f} ms "
          f"(quiet {d['insert_latency_quiet']['p99_ms']:.1f} ms)")  # fmt: skip
    print(f"partition drop: {p['seconds'] * 1000:.0f} ms; concurrent insert p99 "
          f"{p['insert_latency_during']['p99_ms']:.1f} ms, max {p['insert_latency_during']['max_ms']:.1f} ms")  # fmt: skip


def figures(result: dict[str, Any]) -> list[Figure]:
    """Customers endpoint and audit retention."""
    n = result["config"]["customers"]
    before, after = result["customers_before"], result["customers_after"]
    d, p = result["delete"], result["partition"]
    return [
        Figure.checked(
            f"customers endpoint p95, {n:,} customers, a day of events",
            after["p95_ms"],
            f"{after['p95_ms']:.0f} ms",
            TARGET_P95,
            f"summing ingest_events: {before['p95_ms']:.0f} ms",
        ),
        Figure.of(
            "audit retention: batched deletes",
            f"{d['rows_per_s']:,.0f} rows/s",
            f"batch p50 {d['batch']['p50_ms']:.0f} ms, concurrent insert p99 "
            f"{d['insert_latency_during']['p99_ms']:.1f} ms (quiet "
            f"{d['insert_latency_quiet']['p99_ms']:.1f}); partition drop "
            f"{1000 * p['seconds']:.0f} ms",
        ),
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument("--events", type=int, default=1440, help="measurement batches a day each")
    parser.add_argument("--runs", type=int, default=5, help="runs of the old (slow) query")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    if not (1 <= args.customers <= 100_000 and 1 <= args.events <= 1440):
        print("need 1 <= customers <= 100000 and 1 <= events <= 1440", file=sys.stderr)
        return 2
    exit_on_sigterm()
    started = time.monotonic()
    result = run(args)
    report(result, args)
    result.update(benchmark="retention", config={k: v for k, v in vars(args).items() if k != "json"},
                  runtime_s=time.monotonic() - started)  # fmt: skip
    finish("retention", result, figures(result), args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
