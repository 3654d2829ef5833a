"""The server's candidate write paths for a measurements batch, straight through psycopg.

    uv run python bench/insert_paths.py [--rows 100000] [--batch-size 5000] [--reps 5]

Backs the choice documented in `services/ingestd/src/ingestd/storage/writes.py`. Each path writes the
same rows, batch by batch (one transaction per batch), with psycopg's async connection as
ingestd uses it, into `fleet.power_measurements` of a freshly migrated database:

  copy              binary COPY into the table (what ingestd does for new samples)
  copy-sync         the same with psycopg's sync connection (the ingest.py baseline)
  staging           binary COPY into a temp table, INSERT … SELECT … ON CONFLICT DO NOTHING
  unnest            INSERT … SELECT FROM unnest(<27 binary arrays>) ON CONFLICT DO NOTHING
  staging-dup       the staging path when every row is already stored (re-delivery)
  unnest-dup        the unnest path when every row is already stored
  copy-fail-staging COPY in a savepoint that fails on one stored key in the middle of the batch,
                    then the staging path: ingestd's cost for a partly re-delivered batch

Before each timed pass the table is truncated (and, for the -dup and -fail paths, preloaded
untimed), then CHECKPOINTed, so every path starts from the same table state. The order of the
paths rotates between repetitions.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import psycopg
from common import create_central_database, exit_on_sigterm, machine_info, summarize
from fleetdev.pgcluster import temporary_cluster
from psycopg import AsyncConnection, sql
from report import Figure, finish
from rows import COPY_COLUMNS, COPY_TYPES, MeasurementTuple, chunks, generate_measurements

CUSTOMER_ID = 1
TABLE = sql.SQL("fleet.power_measurements_scaled")
COLUMNS = sql.SQL(", ").join(sql.Identifier(c) for c in COPY_COLUMNS)

COPY_TABLE = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(TABLE, COLUMNS)
CREATE_STAGING = sql.SQL(
    "CREATE TEMP TABLE IF NOT EXISTS measurement_staging "
    "(LIKE fleet.power_measurements_scaled INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
)
COPY_STAGING = sql.SQL("COPY measurement_staging ({}) FROM STDIN (FORMAT BINARY)").format(COLUMNS)
MERGE_STAGING = sql.SQL(
    "INSERT INTO {table} ({cols}) SELECT {cols} FROM measurement_staging "
    "ON CONFLICT (time, customer_id, device_id) DO NOTHING"
).format(table=TABLE, cols=COLUMNS)
INSERT_UNNEST = sql.SQL(
    "INSERT INTO {table} ({cols}) SELECT u.*, %b::int8 FROM unnest({arrays}) AS u "
    "ON CONFLICT (time, customer_id, device_id) DO NOTHING"
).format(
    table=TABLE,
    cols=COLUMNS,
    arrays=sql.SQL(", ").join(sql.SQL(f"%b::{t}[]") for t in COPY_TYPES[:-1]),
)

PATHS = {
    "copy": "binary COPY into the table (async)",
    "copy-sync": "binary COPY into the table (sync)",
    "staging": "COPY to temp table + INSERT ON CONFLICT",
    "unnest": "INSERT … SELECT FROM unnest ON CONFLICT",
    "staging-dup": "staging path, all rows duplicates",
    "unnest-dup": "unnest path, all rows duplicates",
    "copy-fail-staging": "COPY fails on 1 dup, then staging",
}

Batch = Sequence[MeasurementTuple]  # rows with customer_id appended


async def _copy(conn: AsyncConnection[Any], statement: sql.Composed, batch: Batch) -> None:
    async with conn.cursor() as cur, cur.copy(statement) as copy:
        copy.set_types(list(COPY_TYPES))
        for row in batch:
            await copy.write_row(row)


async def copy_path(conn: AsyncConnection[Any], batch: Batch) -> int:
    async with conn.transaction():
        await _copy(conn, COPY_TABLE, batch)
    return len(batch)


async def staging_path(conn: AsyncConnection[Any], batch: Batch) -> int:
    async with conn.transaction():
        await conn.execute(CREATE_STAGING)
        await _copy(conn, COPY_STAGING, batch)
        cur = await conn.execute(MERGE_STAGING)
        return max(cur.rowcount, 0)


async def unnest_path(conn: AsyncConnection[Any], batch: Batch) -> int:
    columns = [list(col) for col in zip(*batch, strict=True)]
    async with conn.transaction():
        cur = await conn.execute(INSERT_UNNEST, [CUSTOMER_ID, *columns[:-1]])
        return max(cur.rowcount, 0)


async def copy_fail_staging_path(conn: AsyncConnection[Any], batch: Batch) -> int:
    async with conn.transaction():
        try:
            async with conn.transaction():
                await _copy(conn, COPY_TABLE, batch)
            return len(batch)
        except psycopg.errors.UniqueViolation:
            pass
        await conn.execute(CREATE_STAGING)
        await _copy(conn, COPY_STAGING, batch)
        cur = await conn.execute(MERGE_STAGING)
        return max(cur.rowcount, 0)


def copy_sync(conn: psycopg.Connection[Any], batches: Sequence[Batch]) -> None:
    for batch in batches:
        with conn.transaction(), conn.cursor() as cur, cur.copy(COPY_TABLE) as copy:
            copy.set_types(list(COPY_TYPES))
            for row in batch:
                copy.write_row(row)


async def run(
    dsn: str, batches: list[Batch], reps: int, time_limit: float
) -> dict[str, list[float]]:
    rows = sum(len(b) for b in batches)
    middle = [b[len(b) // 2] for b in batches]
    results: dict[str, list[float]] = {name: [] for name in PATHS}
    deadline = time.monotonic() + time_limit
    async_paths: dict[str, tuple[Callable[[AsyncConnection[Any], Batch], Awaitable[int]], int]] = {
        "copy": (copy_path, rows),
        "staging": (staging_path, rows),
        "unnest": (unnest_path, rows),
        "staging-dup": (staging_path, 0),
        "unnest-dup": (unnest_path, 0),
        "copy-fail-staging": (copy_fail_staging_path, rows - len(batches)),
    }
    names = list(PATHS)
    with (
        psycopg.connect(dsn, autocommit=True) as admin,
        psycopg.connect(dsn, autocommit=True) as sync_conn,
    ):
        async with await AsyncConnection.connect(dsn, autocommit=True) as conn:

            async def prepare(name: str) -> None:
                admin.execute("TRUNCATE fleet.power_measurements_scaled")
                if name.endswith("-dup"):
                    copy_sync(admin, batches)
                elif name == "copy-fail-staging":
                    copy_sync(admin, [middle])
                admin.execute("CHECKPOINT")

            # Warm-up, not measured: the temp table, plans, caches.
            for name in ("copy", "staging", "unnest"):
                await prepare(name)
                await async_paths[name][0](conn, batches[0])

            for rep in range(reps):
                for name in names[rep % len(names) :] + names[: rep % len(names)]:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"time limit of {time_limit:g} s exceeded")
                    await prepare(name)
                    started = time.perf_counter()
                    if name == "copy-sync":
                        copy_sync(sync_conn, batches)
                        inserted = rows
                    else:
                        path, _ = async_paths[name]
                        inserted = 0
                        for batch in batches:
                            inserted += await path(conn, batch)
                    elapsed = time.perf_counter() - started
                    expected = rows if name == "copy-sync" else async_paths[name][1]
                    if inserted != expected:
                        raise RuntimeError(f"{name}: inserted {inserted}, expected {expected}")
                    results[name].append(rows / elapsed)
                print(f"  rep {rep + 1}/{reps} done", file=sys.stderr)
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="ingestd's candidate write paths, via psycopg")
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--batch-size", type=int, default=5_000)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--devices", type=int, default=20)
    parser.add_argument("--time-limit", type=float, default=600.0)
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    if not (1 <= args.batch_size <= args.rows <= 10_000_000 and 1 <= args.reps <= 100):
        print("need 1 <= batch-size <= rows <= 10M and 1 <= reps <= 100", file=sys.stderr)
        return 2
    exit_on_sigterm()
    with temporary_cluster(prefix="fleet-bench-pg-") as cluster:
        dsn = create_central_database(cluster, bootstrap=False)  # a plain table, no partitions
        rows = [(*r, CUSTOMER_ID) for r in generate_measurements(args.rows, devices=args.devices)]
        batches = chunks(rows, args.batch_size)
        samples = asyncio.run(run(dsn, batches, args.reps, args.time_limit))
        machine = machine_info(dsn)

    rates = {name: summarize(values) for name, values in samples.items()}
    copy = rates["copy"].median
    print()
    print(f"{args.rows:,} rows in {args.batch_size:,}-row batches, {args.reps} reps")
    header = f"{'path':<42} {'rows/s':>9} {'min-max':>17} {'x COPY':>7}"
    print(header)
    print("-" * len(header))
    for name, label in PATHS.items():
        r = rates[name]
        span = f"{r.low:,.0f}-{r.high:,.0f}"
        print(f"{label:<42} {r.median:>9,.0f} {span:>17} {r.median / copy:>7.2f}")
    result = {
        "benchmark": "insert_paths",
        "config": {k: v for k, v in vars(args).items() if k != "json"},
        "machine": machine,
        "paths": {
            name: {
                "label": PATHS[name],
                "rows_per_s": {
                    "median": rates[name].median,
                    "min": rates[name].low,
                    "max": rates[name].high,
                    "samples": samples[name],
                },
                "ratio_to_copy": rates[name].median / copy,
            }
            for name in PATHS
        },
    }
    finish("insert_paths", result, figures(result), args.json)
    return 0


def figures(result: dict[str, Any]) -> list[Figure]:
    """Rows/s of each write path beside binary COPY's (no target: it backs a choice)."""
    return [
        Figure.of(
            f"insert path: {p['label']}",
            f"{p['rows_per_s']['median']:,.0f} rows/s",
            f"{p['ratio_to_copy']:.2f}x COPY",
        )
        for p in result["paths"].values()
    ]


if __name__ == "__main__":
    sys.exit(main())
