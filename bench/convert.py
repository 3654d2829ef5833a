"""Converting a populated central database to the scaled layout online: minutes per 10 M rows,
and what it does to ingest latency meanwhile.

    uv run python bench/convert.py [--meters 100] [--days 7] [--path ts|plain] [--load-s 20]

One throwaway cluster (TimescaleDB preloaded when installed; `--path plain` or no TimescaleDB:
the partitioned table). A database as `ingestd migrate` leaves it gets `--meters` x `--days` of
one-a-minute rows the way an ingestd before migration 0008 stored them (every value in its
float8 column; TimescaleDB: chunks older than now compressed), then `ingestd serve` runs and a
client posts what a gateway posts — 27 meters' samples of the current minute, gzip JSON, one
batch after another — for `--load-s` seconds without conversion, then while
`convert_stored_rows` (what `ingestd convert-storage` runs) converts everything. Prints the
rows converted, minutes per 10 M rows, and the batches' p50/p99 latency before and during.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import http.client
import statistics
import sys
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import psycopg
from common import IngestdProcess, exit_on_sigterm, machine_info
from fleetcore import MEASUREMENT_VALUE_FIELDS
from fleetdev.pgcluster import temporary_cluster, timescaledb_installed
from report import Figure, finish
from storage_ingest import central_database

OLD_ROWS = f"""
INSERT INTO fleet.power_measurements_scaled (time, customer_id, device_id, received_at,
    {", ".join(MEASUREMENT_VALUE_FIELDS)})
SELECT t, %(customer)s, d, t + make_interval(secs => 1 + 3 * random()),
       round((230 + random())::numeric, 1), round((230 + random())::numeric, 1),
       round((230 + random())::numeric, 1), round((398 + random())::numeric, 1),
       round((398 + random())::numeric, 1), round((398 + random())::numeric, 1),
       round((20 * random())::numeric, 3), round((20 * random())::numeric, 3),
       round((20 * random())::numeric, 3), round(random()::numeric, 3),
       round((4 * random())::numeric, 3), round((4 * random())::numeric, 3),
       round((4 * random())::numeric, 3), round((12 * random())::numeric, 3),
       round((2 * random())::numeric, 3), round((12 * random())::numeric, 3),
       round((0.9 + random() / 10)::numeric, 3), round((50 + random() / 20)::numeric, 2),
       round((1000 + d * 97 + extract(epoch FROM t - %(start)s) / 600)::numeric, 1), 0,
       round((100 + extract(epoch FROM t - %(start)s) / 3000)::numeric, 1), 0,
       round((2 + random())::numeric, 2), round((5 + random())::numeric, 2)
FROM generate_series(1, %(meters)s) AS d,
     generate_series(%(start)s::timestamptz, %(end)s::timestamptz - interval '1 minute',
                     interval '1 minute') AS t
"""


def populate(dsn: str, meters: int, days: int, timescale: bool) -> int:
    from ingestd.storage.partitions import ensure_partitions

    end = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=1)
    start = end - timedelta(days=days)

    async def partitions() -> None:
        async with await psycopg.AsyncConnection.connect(dsn) as conn:
            await ensure_partitions(conn, [start + timedelta(days=d) for d in range(days + 1)])

    if not timescale:
        asyncio.run(partitions())
    with psycopg.connect(dsn, autocommit=True) as conn:
        for day in range(days):  # a day per statement: bounded memory and WAL per transaction
            lo = start + timedelta(days=day)
            conn.execute(
                OLD_ROWS,
                {"customer": 1, "meters": meters, "start": lo, "end": lo + timedelta(days=1)},
            )
        if timescale:
            conn.execute(
                "SELECT count(compress_chunk(c, if_not_compressed => true)) FROM "
                "show_chunks('fleet.power_measurements_scaled', older_than => now() - interval '13 hours') c"
            )
        conn.execute("VACUUM ANALYZE fleet.power_measurements_scaled")
        row = conn.execute("SELECT count(*) FROM fleet.power_measurements_scaled").fetchone()
    return int(row[0]) if row else 0


class Gateway(threading.Thread):
    """Posts a gateway's batch (27 meters, the current minute) one after another; keeps
    (sent-at, latency, status)."""

    def __init__(self, port: int, token: str) -> None:
        super().__init__(daemon=True)
        self.port, self.token = port, token
        self.samples: list[tuple[float, float, int]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        tick = 0
        while not self.stop.is_set():
            now = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=tick)
            items = [
                {"device_id": 10_000 + m, "time": now.isoformat(), "received_at": now.isoformat(),
                 **dict.fromkeys(MEASUREMENT_VALUE_FIELDS, 230.1)}
                for m in range(27)
            ]  # fmt: skip
            body = gzip.compress(msgspec.json.encode({"items": items}), 1)
            headers = {"X-Batch-Type": "measurements", "X-Customer-Token": self.token,
                       "Content-Type": "application/json", "Content-Encoding": "gzip"}  # fmt: skip
            started = time.monotonic()
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                try:
                    conn.request("POST", "/api/fleet/ingest", body, headers)
                    response = conn.getresponse()
                    response.read()
                    status = response.status
                finally:
                    conn.close()
            except (OSError, http.client.HTTPException):
                status = 0
            self.samples.append((started, time.monotonic() - started, status))
            tick += 1


def _latencies(samples: Sequence[tuple[float, float, int]], lo: float, hi: float) -> dict[str, Any]:
    picked = [s for s in samples if lo <= s[0] < hi]
    ms = sorted(s[1] * 1000 for s in picked)
    if not ms:
        return {"batches": 0}
    return {
        "batches": len(ms),
        "errors": sum(1 for s in picked if s[2] != 200),
        "p50_ms": statistics.median(ms),
        "p99_ms": ms[min(len(ms) - 1, int(len(ms) * 0.99))],
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    from ingestd.customers import add_customer
    from ingestd.storage.conversion import convert_stored_rows, unconverted_rows

    timescale = args.path == "ts" and timescaledb_installed()
    extra = {"timescaledb.max_background_workers": "0"} if timescale else {}
    result: dict[str, Any] = {"path": "timescaledb" if timescale else "postgresql"}
    with temporary_cluster(
        prefix="fleet-bench-convert-", timescaledb=timescale, **extra
    ) as cluster:
        dsn = central_database(cluster, "central", timescale=timescale, chunk_hours=12)
        result["machine"] = machine_info(dsn)
        token = add_customer(dsn, "BENCH", "Benchmark customer")
        started = time.monotonic()
        result["rows"] = populate(dsn, args.meters, args.days, timescale)
        print(
            f"  {result['rows']:,} old-layout rows in {time.monotonic() - started:.0f} s",
            file=sys.stderr,
        )
        server = IngestdProcess(dsn, {"INGESTD_TIMESCALEDB": "on" if timescale else "off"})
        server.start()
        gateway = Gateway(server.port, token)
        try:
            gateway.start()
            time.sleep(args.load_s)
            began = time.monotonic()

            async def convert() -> Any:
                async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
                    report = await convert_stored_rows(conn, compress_after=timedelta(hours=1))
                    return report, await unconverted_rows(conn)

            report, left = asyncio.run(convert())
            ended = time.monotonic()
            time.sleep(1)
        finally:
            gateway.stop.set()
            gateway.join(timeout=60)
            server.stop()
    seconds = ended - began
    result.update(
        converted=report.rows,
        parts=len(report.parts),
        left_unconverted=left,
        convert_s=seconds,
        minutes_per_10m_rows=seconds / 60 * 10_000_000 / max(report.rows, 1),
        before=_latencies(gateway.samples, began - args.load_s, began),
        during=_latencies(gateway.samples, began, ended),
    )
    return result


def figures(result: dict[str, Any]) -> list[Figure]:
    before, during = result["before"], result["during"]

    def lat(d: dict[str, Any]) -> str:
        if not d.get("batches"):
            return "no batches"
        return f"p50 {d['p50_ms']:.0f} / p99 {d['p99_ms']:.0f} ms, {d['batches']} batches, {d['errors']} errors"

    return [
        Figure.of(
            f"convert ({result['path']}): minutes per 10 M rows",
            f"{result['minutes_per_10m_rows']:.1f}",
            f"{result['converted']:,} rows in {result['convert_s']:.0f} s, {result['parts']} parts, "
            f"{result['left_unconverted']} left",
        ),
        Figure.of("convert: ingest latency before (27-row batches)", lat(before)),
        Figure.of("convert: ingest latency during", lat(during)),
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--meters", type=int, default=100)
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--path", choices=("ts", "plain"), default="ts")
    parser.add_argument("--load-s", type=float, default=20.0, help="ingest alone before converting")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    if not (1 <= args.meters <= 10_000 and 1 <= args.days <= 366 and args.load_s >= 1):
        print("need 1 <= meters <= 10000, 1 <= days <= 366, --load-s >= 1", file=sys.stderr)
        return 2
    exit_on_sigterm()
    started = time.monotonic()
    result = run(args)
    result.update(benchmark="convert", config={k: v for k, v in vars(args).items() if k != "json"},
                  runtime_s=time.monotonic() - started)  # fmt: skip
    finish("convert", result, figures(result), args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
