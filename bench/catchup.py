"""Catch-up benchmark: how fast the pusher drains a backlog into ingestd, against ingest alone.

    uv run python bench/catchup.py [--rows 1000000] [--batch-size 5000] [--devices 100]
                                   [--encoder stdlib|numpy|auto] [--idle-s 20]

One throwaway PostgreSQL cluster holds a customer database and a central one. The customer
database gets `--rows` samples (all 24 values) with one server-side INSERT … generate_series,
then VACUUM ANALYZE, as a meter stack's table would look after an outage.

1. ingest-only: the same rows, read with the pusher's own query and encoded beforehand as the
   pusher sends them (not timed: columnar zstd, or gzip JSON with `--wire-format json`), are
   POSTed one after another, one in flight (as the pusher does), straight to an ingestd
   subprocess. Rows/s = rows / wall time of the POSTs.
2. end-to-end: the central table is emptied, ingestd restarted (so its peak RSS is this phase's
   alone), and `pusher run` is started as a subprocess; drain time runs from its start until
   its state says every row is shipped (so it includes the pusher's start-up, ~0.5 s).

The pusher encodes as a gateway does (`--encoder stdlib`, no numpy: what the .deb installs;
`numpy` for `pip install 'fleet-pusher[numpy]'`). Peak RSS is the kernel's high-water mark
(VmHWM in /proc/<pid>/status) of the pusher and ingestd processes (not of PostgreSQL); the
pusher's steady RSS is the median VmRSS of the second half of the drain, its idle RSS the
median over `--idle-s` seconds after it (ticking every 5 s with nothing to send); the pusher's CPU per row (user + system from /proc, read
just before it is stopped) covers reading, encoding, compressing and sending.
Results go to bench/results/catchup-<time>.json (or --json).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
import zlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
from common import RESULTS_DIR, cpu_seconds, exit_on_sigterm, rss_bytes
from fleetcore import PushCursor, zstd_compress
from fleetcore.protocol import COLUMNAR_MEDIA_TYPE
from fleetdev.pgcluster import free_port, temporary_cluster
from gateway_venv import add_pusher_python_argument, pusher_python
from pusher import source
from pusher.delivery import gzip_body
from pusher.migrate import apply_migrations
from pusher_stack import (
    SEED_DEVICES,
    SEED_MEASUREMENTS,
    SEED_ROUNDING,
    SEED_SITES,
    Child,
    scalar,
    start_ingestd,
)
from report import Figure, Target, finish

TARGET_RATIO = Target(">=", 0.8, "x")  # end-to-end vs ingest-only
TARGET_PUSHER_RSS = Target("<", 150.0, " MB")
TARGET_PUSHER_STEADY_RSS = Target("<=", 40.0, " MiB")  # issue 24: a gateway's pusher


def steady(samples: list[float]) -> float:
    """The median of the second half of RSS samples (MiB): what the process settles at."""
    late = sorted(samples[len(samples) // 2 :])
    return round(late[len(late) // 2], 1) if late else 0.0


def idle_samples(pusher: Child, seconds: float) -> list[float]:
    """The drained pusher's RSS (MiB), sampled every 0.5 s while it ticks with nothing to send."""
    samples = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and pusher.proc.poll() is None:
        samples.append(rss_bytes(pusher.proc.pid) / 2**20)
        time.sleep(0.5)
    return samples


Encoded = tuple[bytes, str, dict[str, str]]  # body, cursor, content headers


async def read_all_batches(
    customer: str, batch_size: int, level: int, wire_format: str, encoder: str
) -> tuple[list[Encoded], int]:
    """Every batch the pusher would send, encoded as it sends them, in order (read with the
    pusher's own reads)."""
    batches: list[Encoded] = []
    raw_bytes = 0
    cursor = PushCursor.start()
    columnar = wire_format == "auto"
    build = source.columnar_encoder(encoder)
    async with await source.connect(customer) as conn:
        while True:
            if columnar:
                batch = await source.read_measurement_columns(conn, cursor, batch_size, build)
            else:
                batch = await source.read_measurements(conn, cursor, batch_size)
            if batch.count == 0:
                return batches, raw_bytes
            raw_bytes += len(batch.body)
            if columnar:
                headers = {"Content-Type": COLUMNAR_MEDIA_TYPE, "Content-Encoding": "zstd"}
                body = zstd_compress(batch.body)
            else:
                headers = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
                body = gzip_body(batch.body, level)
            batches.append((body, batch.end.encode(), headers))
            cursor = batch.end


async def post_all(url: str, token: str, batches: list[Encoded]) -> float:
    """POST each batch in turn (one in flight); return the wall time."""
    headers = {"X-Customer-Token": token, "X-Batch-Type": "measurements"}
    async with aiohttp.ClientSession() as session:
        started = time.perf_counter()
        for body, cursor, content in batches:
            async with session.post(
                url, data=body, headers={**headers, **content, "X-Push-Cursor": cursor}
            ) as r:
                answer = await r.read()
                if r.status != 200:
                    raise RuntimeError(f"ingestd answered {r.status}: {answer[:200]!r}")
        return time.perf_counter() - started


def gzip_levels(sample: bytes) -> dict[str, Any]:
    """Size and time of one batch body at a few gzip levels (what PUSHER_GZIP_LEVEL trades)."""
    out: dict[str, Any] = {"raw_bytes": len(sample)}
    for level in (1, 3, 6):
        started = time.perf_counter()
        for _ in range(5):
            packed = gzip_body(sample, level)
        out[f"level_{level}"] = {
            "bytes": len(packed),
            "ratio": round(len(sample) / len(packed), 2),
            "ms": round((time.perf_counter() - started) / 5 * 1000, 2),
        }
    assert zlib.decompress(packed, 16 + zlib.MAX_WBITS) == sample
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--devices", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=5000)
    parser.add_argument("--gzip-level", type=int, default=1)
    parser.add_argument(
        "--wire-format", choices=("auto", "json"), default="auto", help="PUSHER_WIRE_FORMAT"
    )
    parser.add_argument(
        "--encoder",
        choices=("stdlib", "numpy", "auto"),
        default="stdlib",
        help="PUSHER_COLUMNAR_ENCODER (stdlib: a gateway's, installed from the .deb)",
    )
    add_pusher_python_argument(parser)
    parser.add_argument("--timeout", type=float, default=1800.0, help="give up on the drain")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument(
        "--idle-s",
        type=float,
        default=20.0,
        help="the drained pusher's idle RSS is sampled so long",
    )
    args = parser.parse_args(argv)
    args.pusher_python = pusher_python(args.pusher_python)
    exit_on_sigterm()

    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    logs = RESULTS_DIR / f"catchup-{stamp}-logs"
    logs.mkdir()
    result: dict[str, Any] = {
        "rows": args.rows,
        "batch_size": args.batch_size,
        "devices": args.devices,
        "gzip_level": args.gzip_level,
        "wire_format": args.wire_format,
        "encoder": args.encoder,
        "pusher_python": args.pusher_python or sys.executable,
        "nproc": os.cpu_count(),
        "loadavg_before": os.getloadavg(),
    }
    with temporary_cluster(prefix="fleet-bench-catchup-") as cluster:
        customer = cluster.create_database("customer")
        central = cluster.create_database("central")
        result["postgresql"] = scalar(central, "SHOW server_version")
        run = {**os.environ, "INGESTD_DATABASE_URL": central, "INGESTD_TIMESCALEDB": "off"}
        subprocess.run(
            [sys.executable, "-m", "ingestd", "migrate"], env=run, check=True, capture_output=True
        )
        token = (
            subprocess.run(
                [sys.executable, "-m", "ingestd", "customers", "add", "BENCH"],
                env=run,
                check=True,
                capture_output=True,
                text=True,
            )
            .stdout.strip()
            .splitlines()[0]
        )
        apply_migrations(customer)

        print(f"seeding {args.rows} rows …", flush=True)
        started = time.perf_counter()
        with psycopg.connect(customer, autocommit=True) as conn:
            conn.execute(SEED_SITES, {"sites": 10})
            conn.execute(SEED_DEVICES, {"sites": 10, "devices": args.devices})
            conn.execute(SEED_ROUNDING)
            conn.execute(SEED_MEASUREMENTS, {"rows": args.rows, "devices": args.devices})
            conn.execute("VACUUM ANALYZE monitoring.power_measurements")
        result["seed_s"] = round(time.perf_counter() - started, 1)
        result["customer_table_mib"] = round(
            scalar(customer, "SELECT pg_total_relation_size('monitoring.power_measurements')")
            / 2**20,
            1,
        )

        port = free_port()
        url = f"http://127.0.0.1:{port}/api/fleet/ingest"

        # 1. ingest-only
        print("reading and compressing the batches for the ingest-only run …", flush=True)
        batches, raw_bytes = asyncio.run(
            read_all_batches(
                customer, args.batch_size, args.gzip_level, args.wire_format, args.encoder
            )
        )
        wire_bytes = sum(len(b) for b, _, _ in batches)
        ingestd = start_ingestd(central, port, logs / "ingestd-only.log")
        try:
            print(f"ingest-only: posting {len(batches)} batches …", flush=True)
            ingest_s = asyncio.run(post_all(url, token, batches))
            ingest_rss = ingestd.peak_rss_mib()
        finally:
            ingestd.stop()
        stored = scalar(central, "SELECT count(*) FROM fleet.power_measurements")
        assert stored == args.rows, f"ingest-only stored {stored} of {args.rows}"
        del batches
        result["ingest_only"] = {
            "seconds": round(ingest_s, 2),
            "rows_per_s": round(args.rows / ingest_s),
            "batches": -(-args.rows // args.batch_size),
            "body_mib": round(raw_bytes / 2**20, 1),
            "wire_mib": round(wire_bytes / 2**20, 1),
            "ingestd_peak_rss_mib": round(ingest_rss, 1),
        }
        with psycopg.connect(central, autocommit=True) as conn:
            conn.execute(
                "TRUNCATE fleet.power_measurements_scaled, fleet.ingest_events, fleet.rejected_rows"
            )
            conn.execute("VACUUM ANALYZE fleet.power_measurements_scaled")

        # 2. end-to-end through the pusher
        ingestd = start_ingestd(central, port, logs / "ingestd-e2e.log")
        pusher_env = {
            "PUSHER_PUSH_ENABLED": "true",
            "PUSHER_DATABASE_URL": customer,
            "PUSHER_INGEST_URL": f"http://127.0.0.1:{port}",
            "PUSHER_TOKEN": token,
            "PUSHER_BATCH_SIZE": str(args.batch_size),
            "PUSHER_GZIP_LEVEL": str(args.gzip_level),
            "PUSHER_WIRE_FORMAT": args.wire_format,
            "PUSHER_COLUMNAR_ENCODER": args.encoder,
            "PUSHER_PUSH_INTERVAL_S": "5",
            "PUSHER_BACKOFF_BASE_S": "0.5",
            "PUSHER_BACKOFF_CAP_S": "5",
            "PUSHER_LOG_FORMAT": "json",
        }
        pusher_rss = ingestd_rss = pusher_cpu = 0.0
        draining_rss: list[float] = []
        idle_rss: list[float] = []
        try:
            print("end-to-end: pusher draining …", flush=True)
            started = time.perf_counter()
            pusher = Child("pusher", ["run"], pusher_env, logs / "pusher.log", args.pusher_python)
            try:
                shipped = 0
                while time.perf_counter() - started < args.timeout:
                    if pusher.proc.poll() is not None:
                        raise RuntimeError(f"pusher exited {pusher.proc.returncode}; see {logs}")
                    pusher_rss = max(pusher_rss, pusher.peak_rss_mib())
                    draining_rss.append(rss_bytes(pusher.proc.pid) / 2**20)
                    shipped = (
                        scalar(
                            customer,
                            "SELECT shipped_rows FROM app.fleet_push_state "
                            "WHERE resource = 'measurements'",
                        )
                        or 0
                    )
                    if shipped >= args.rows:
                        break
                    time.sleep(0.1)
                drain_s = time.perf_counter() - started
                pusher_rss = max(pusher_rss, pusher.peak_rss_mib())
                pusher_cpu = cpu_seconds(pusher.proc.pid)
                ingestd_rss = ingestd.peak_rss_mib()
                result["loadavg_after_drain"] = os.getloadavg()
                idle_rss = idle_samples(pusher, args.idle_s)
            finally:
                pusher.stop()
        finally:
            ingestd.stop()
        stored = scalar(central, "SELECT count(*) FROM fleet.power_measurements")
        duplicates = scalar(central, "SELECT coalesce(sum(duplicates), 0) FROM fleet.ingest_events")
        result["end_to_end"] = {
            "seconds": round(drain_s, 2),
            "rows_per_s": round(args.rows / drain_s),
            "stored_centrally": stored,
            "duplicates": duplicates,
            "pusher_peak_rss_mib": round(pusher_rss, 1),
            "pusher_steady_rss_mib": steady(draining_rss),
            "pusher_idle_rss_mib": steady(idle_rss),
            "pusher_cpu_us_per_row": round(pusher_cpu / args.rows * 1e6, 2),
            "ingestd_peak_rss_mib": round(ingestd_rss, 1),
        }
        result["ratio_end_to_end_vs_ingest_only"] = round(
            result["end_to_end"]["rows_per_s"] / result["ingest_only"]["rows_per_s"], 3
        )
        sample = asyncio.run(_sample_body(customer, args.batch_size))
        result["gzip"] = gzip_levels(sample)
        if stored != args.rows:
            print(f"WARNING: {stored} rows stored centrally, expected {args.rows}", file=sys.stderr)

    print(json.dumps(result, indent=2))
    finish("catchup", result, figures(result), args.json)
    return 0 if stored == args.rows else 1


def figures(result: dict[str, Any]) -> list[Figure]:
    e2e, only = result["end_to_end"], result["ingest_only"]
    ratio = result["ratio_end_to_end_vs_ingest_only"]
    rss_mb = e2e["pusher_peak_rss_mib"] * 1.048576
    return [
        Figure.checked(
            f"3. catch-up {result['rows']:,} rows: pusher->ingestd / ingest-only",
            ratio,
            f"{ratio:.2f}x",
            TARGET_RATIO,
            f"{e2e['rows_per_s']:,} vs {only['rows_per_s']:,} rows/s",
        ),
        Figure.of("3. catch-up drain time", f"{e2e['seconds']:.1f} s"),
        Figure.checked(
            "3. pusher peak RSS while draining",
            rss_mb,
            f"{e2e['pusher_peak_rss_mib']:.0f} MiB",
            TARGET_PUSHER_RSS,
        ),
        Figure.checked(
            "3. pusher steady RSS while draining",
            e2e["pusher_steady_rss_mib"],
            f"{e2e['pusher_steady_rss_mib']:.0f} MiB",
            TARGET_PUSHER_STEADY_RSS,
            f"encoder {result['encoder']}",
        ),
        Figure.checked(
            "3. pusher idle RSS after draining",
            e2e["pusher_idle_rss_mib"],
            f"{e2e['pusher_idle_rss_mib']:.0f} MiB",
            TARGET_PUSHER_STEADY_RSS,
        ),
        Figure.of(
            "3. pusher CPU µs per row (read, encode, compress, send)",
            f"{e2e['pusher_cpu_us_per_row']:.2f}",
            f"wire format {result['wire_format']}, encoder {result['encoder']}",
        ),
        Figure.of("3. ingestd peak RSS while draining", f"{e2e['ingestd_peak_rss_mib']:.0f} MiB"),
    ]


async def _sample_body(customer: str, size: int) -> bytes:
    async with await source.connect(customer) as conn:
        return (await source.read_measurements(conn, PushCursor.start(), size)).body


if __name__ == "__main__":
    sys.exit(main())
