"""What the hourly aggregate's upkeep costs ingest, on plain PostgreSQL.

    uv run python bench/rollup_cost.py [--rows 100000] [--batch-size 5000] [--reps 5]

Two central databases in one throwaway cluster, each with its own `ingestd serve`:

  raw        migrations only: one plain table, no partitions, no hourly aggregate to maintain
  storage    as `ingestd migrate` leaves it without TimescaleDB: weekly partitions, every batch
             marking the hours it touched, and the housekeeping task recomputing the rollup
             every second (INGESTD_HOUSEKEEPING_INTERVAL_S=1, settle 0: the upkeep runs *during*
             the measurement, the worst case)

The same gzip JSON batches (rows spread over 20 devices and the last ~3 days) are POSTed by one
client to each, in alternating order, the tables emptied before each run. After the `storage`
runs the rollup is drained and checked against the raw rows. Reports rows/s, the median ratio
storage/raw, and the cost (1 - ratio); the target is a cost under 20 %.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
from common import IngestdProcess, create_central_database, exit_on_sigterm, machine_info
from fleetdev.pgcluster import temporary_cluster
from ingestd.customers import add_customer
from report import Figure, Target, finish
from rows import chunks, encode_batch, generate_measurements, measurement_items

INGEST_PATH = "/api/fleet/ingest"
TARGET_COST = Target("<", 20.0, "%")  # of ingest throughput


async def _post(url: str, token: str, bodies: Sequence[tuple[bytes, int]]) -> float:
    headers = {
        "X-Customer-Token": token,
        "X-Batch-Type": "measurements",
        "Content-Type": "application/json",
        "Content-Encoding": "gzip",
    }
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
        started = time.perf_counter()
        for body, count in bodies:
            async with session.post(url, data=body, headers=headers) as resp:
                result = await resp.json()
                if resp.status != 200 or result["accepted"] != count:
                    raise RuntimeError(f"unexpected answer {resp.status}: {result}")
        return time.perf_counter() - started


def _reset(dsn: str, storage: bool) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        tables = "fleet.power_measurements_scaled, fleet.hourly_dirty" + (
            ", fleet.hourly_rollup" if storage else ""
        )
        conn.execute(f"TRUNCATE {tables}")
        conn.execute("CHECKPOINT")


def _drain_and_check(dsn: str, deadline_s: float = 60.0) -> int:
    """Wait for housekeeping to clear every mark; check the rollup's sample count against raw."""
    deadline = time.monotonic() + deadline_s
    with psycopg.connect(dsn, autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute("SELECT count(*) FROM fleet.hourly_dirty").fetchone()
            if row and row[0] == 0:
                break
            time.sleep(0.5)
        else:
            raise RuntimeError("rollup did not catch up within the deadline")
        rollup = conn.execute(
            "SELECT coalesce(sum(samples), 0) FROM fleet.hourly_rollup"
        ).fetchone()
        raw = conn.execute("SELECT count(*) FROM fleet.power_measurements").fetchone()
    assert rollup is not None and raw is not None
    if rollup[0] != raw[0]:
        raise RuntimeError(f"rollup counts {rollup[0]} samples, raw table {raw[0]}")
    return int(raw[0])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--batch-size", type=int, default=5_000)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    exit_on_sigterm()

    rows = generate_measurements(args.rows, devices=20)
    bodies = [
        (encode_batch(measurement_items(batch)), len(batch))
        for batch in chunks(rows, args.batch_size)
    ]
    rates: dict[str, list[float]] = {"raw": [], "storage": []}
    with temporary_cluster(prefix="fleet-bench-rollup-") as cluster:
        raw_dsn = create_central_database(cluster, "central_raw", bootstrap=False)
        storage_dsn = create_central_database(cluster, "central_storage")
        tokens = {
            "raw": add_customer(raw_dsn, "BENCH01"),
            "storage": add_customer(storage_dsn, "BENCH01"),
        }
        upkeep = {"INGESTD_HOUSEKEEPING_INTERVAL_S": "1", "INGESTD_ROLLUP_SETTLE_S": "0"}
        with (
            IngestdProcess(raw_dsn, ready_path="/healthz") as raw_server,
            IngestdProcess(storage_dsn, extra_env=upkeep) as storage_server,
        ):
            servers = {"raw": (raw_server, raw_dsn), "storage": (storage_server, storage_dsn)}
            for name, (server, _) in servers.items():  # warm-up
                asyncio.run(_post(server.base_url + INGEST_PATH, tokens[name], bodies[:2]))
            for rep in range(args.reps):
                order = ["raw", "storage"] if rep % 2 == 0 else ["storage", "raw"]
                for name in order:
                    server, dsn = servers[name]
                    _reset(dsn, storage=name == "storage")
                    elapsed = asyncio.run(
                        _post(server.base_url + INGEST_PATH, tokens[name], bodies)
                    )
                    rates[name].append(args.rows / elapsed)
                    if name == "storage":
                        _drain_and_check(dsn)
                print(
                    f"  rep {rep + 1}/{args.reps}: raw {rates['raw'][-1]:,.0f} rows/s, storage {rates['storage'][-1]:,.0f} rows/s",
                    file=sys.stderr,
                )

    ratios = [s / r for s, r in zip(rates["storage"], rates["raw"], strict=True)]
    median: dict[str, Any] = {name: statistics.median(values) for name, values in rates.items()}
    ratio = statistics.median(ratios)
    print(f"\n{'scenario':<44}{'rows/s (median)':>16}{'min-max':>22}")
    for name, label in (
        ("raw", "plain table, no aggregate upkeep"),
        ("storage", "partitions + hourly rollup upkeep"),
    ):
        values = rates[name]
        print(f"{label:<44}{median[name]:>16,.0f}{min(values):>11,.0f}-{max(values):,.0f}")
    cost = 1 - ratio
    print(f"\nstorage/raw ratio (median of per-rep ratios): {ratio:.2f}  -> upkeep cost {cost:.0%}")
    result = {
        "args": {k: v for k, v in vars(args).items() if k != "json"},
        "machine": machine_info(),
        "rows_per_s": rates,
        "median_rows_per_s": median,
        "ratio_per_rep": ratios,
        "median_ratio": ratio,
        "cost": cost,
    }
    finish("rollup-cost", result, figures(result), args.json)
    return 0


def figures(result: dict[str, Any]) -> list[Figure]:
    ratios = result["ratio_per_rep"]
    return [
        Figure.checked(
            "rollup upkeep cost (storage vs plain table)",
            100 * result["cost"],
            f"{result['cost']:.0%}",
            TARGET_COST,
            f"per rep {1 - max(ratios):.0%}-{1 - min(ratios):.0%}",
        )
    ]


if __name__ == "__main__":
    sys.exit(main())
