"""Ingest limit ratio: measurements through a running ingestd, against a binary COPY.

    uv run python bench/ingest.py [--rows 100000] [--batch-size 5000] [--reps 5]

Starts a throwaway PostgreSQL cluster, a migrated central database, a customer and
`ingestd serve` as a subprocess, then, `--reps` times, in a rotating order:

  copy      binary COPY (psycopg, `write_row` of pre-built tuples) of the rows into
            `bench_copy`, a `LIKE fleet.power_measurements_scaled INCLUDING ALL` table
            partitioned by week like the central one (same weeks, made up front for both), in
            the layout ingestd writes (`stored_rows`: each value as its integer steps, or as the
            double sent when it is not a whole number of them, the other column null), one
            transaction per batch: the machine's limit for these rows from Python
  http-1    the same rows as gzip JSON batches POSTed to ingestd by one client, sequentially
  col-1     the same rows as columnar zstd batches (the pusher's encoding once ingestd takes
            it: rows meter by meter, docs/PROTOCOL.md), one client, sequentially
  dup-1     the same batches again (all duplicates, nothing inserted), one client
  http-2    the same rows, batches shared by two concurrent clients
  influx-1  the peer: the same rows as gzip line protocol POSTed to InfluxDB 1.x's /write,
            5,000 lines per request, one client, into a freshly re-created database
            (`peer_influx.py`; skipped, and said so, when `influxd` is not installed)

Both tables are truncated and a CHECKPOINT taken before `copy`, `http-1` and `http-2`, so
every measurement inserts the same rows into an empty table. Bodies are encoded before any
clock starts. CPU per row is read from /proc for ingestd, the whole PostgreSQL cluster, influxd
and this client. Prints a table and writes `bench/results/ingest-<timestamp>.json` (or `--json`).
The baseline's table and COPY are `copy_baseline.py`; the table and figures `ingest_figures.py`.

What the rows look like changes the ratio: `--devices` (meters per batch), `--sample-age-days`
(how old the samples are: the weeks they fall in, the hourly marks they make) and `--gzip-level`
of the JSON bodies reproduce other runs' set-ups (an outside run: 100 meters, ten-month-old
samples, gzip-5: `--devices 100 --sample-age-days 300 --gzip-level 5`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import psycopg
from common import (
    IngestdProcess,
    cpu_seconds,
    create_central_database,
    customer_id,
    exit_on_sigterm,
    machine_info,
    peak_rss_bytes,
    postgres_cpu_seconds,
)
from copy_baseline import copy_batches, create_baseline_table, reset_tables, stored_rows
from fleetcore import columns_from_rows, encode_columns, zstd_compress
from fleetcore.protocol import COLUMNAR_MEDIA_TYPE
from fleetdev.pgcluster import PgCluster, temporary_cluster
from ingest_figures import SCENARIOS, Sample, figures, report
from peer_influx import InfluxdProcess, influxd_binary, line_protocol_bodies, write_lines
from report import finish
from rows import MeasurementTuple, chunks, encode_batch, generate_measurements, measurement_items

INGEST_PATH = "/api/fleet/ingest"
CUSTOMER_CODE = "BENCH01"
_decode_response = msgspec.json.Decoder(dict[str, Any]).decode


def columnar_body(items: Sequence[dict[str, Any]]) -> bytes:
    """The pusher's columnar zstd body of these items (meter by meter, in time)."""
    ordered = sorted(items, key=lambda r: (r["device_id"], r["time"]))
    return zstd_compress(encode_columns(columns_from_rows(ordered)))


class BenchError(RuntimeError):
    """A run that cannot be trusted: a refused batch, a wrong count, a blown time budget."""


@dataclass
class Meters:
    cluster: PgCluster
    ingestd_pid: int
    influxd_pid: int | None

    def read(self) -> tuple[float, ...]:
        return (
            time.perf_counter(),
            cpu_seconds(self.ingestd_pid),
            postgres_cpu_seconds(self.cluster),
            time.process_time(),
            cpu_seconds(self.influxd_pid) if self.influxd_pid else 0.0,
        )

    def sample(self, rows: int, before: tuple[float, ...]) -> Sample:
        after = self.read()
        return Sample(rows, *(b - a for a, b in zip(before, after, strict=True)))


async def _post_all(
    session: aiohttp.ClientSession,
    url: str,
    headers: dict[str, str],
    bodies: Sequence[tuple[bytes, int]],
    *,
    expect_duplicates: bool,
) -> None:
    for body, count in bodies:
        async with session.post(url, data=body, headers=headers) as resp:
            payload = await resp.read()
            if resp.status != 200:
                raise BenchError(f"ingestd answered {resp.status}: {payload[:300]!r}")
        answer = _decode_response(payload)
        accepted, duplicates = (0, count) if expect_duplicates else (count, 0)
        if (answer.get("accepted"), answer.get("duplicates"), answer.get("rejected")) != (
            accepted,
            duplicates,
            0,
        ):
            raise BenchError(
                f"expected accepted={accepted} duplicates={duplicates} rejected=0, got {answer}"
            )


async def _post_concurrently(
    session: aiohttp.ClientSession,
    url: str,
    headers: dict[str, str],
    bodies: Sequence[tuple[bytes, int]],
    clients: int,
    *,
    expect_duplicates: bool = False,
) -> None:
    """`clients` senders, each posting its share of the batches one after another."""
    async with asyncio.TaskGroup() as group:
        for k in range(clients):
            group.create_task(
                _post_all(
                    session, url, headers, bodies[k::clients], expect_duplicates=expect_duplicates
                )
            )


@dataclass
class Bench:
    args: argparse.Namespace
    cluster: PgCluster
    dsn: str
    ingestd: IngestdProcess
    token: str
    copy_batches: list[Sequence[MeasurementTuple]]
    bodies: list[tuple[bytes, int]]
    columnar_bodies: list[tuple[bytes, int]]
    influx: InfluxdProcess | None
    influx_bodies: list[tuple[bytes, int]]

    @property
    def rows(self) -> int:
        return sum(count for _, count in self.bodies)

    async def run(self) -> dict[str, list[Sample]]:
        influx = self.influx
        meters = Meters(self.cluster, self.ingestd.pid, influx.pid if influx else None)
        url = self.ingestd.base_url + INGEST_PATH
        headers = {
            "X-Customer-Token": self.token,
            "X-Batch-Type": "measurements",
            "Content-Type": "application/json",
            "Content-Encoding": "gzip",
        }
        samples: dict[str, list[Sample]] = {
            name: [] for name in SCENARIOS if influx or name != "influx-1"
        }
        deadline = time.monotonic() + self.args.time_limit
        timeout = aiohttp.ClientTimeout(total=120)
        connector = aiohttp.TCPConnector(limit=4)
        with (
            psycopg.connect(self.dsn, autocommit=True) as admin,
            psycopg.connect(self.dsn, autocommit=True) as copy_conn,
        ):
            async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:

                def post(clients: int, duplicates: bool = False) -> Callable[[], Any]:
                    return lambda: _post_concurrently(
                        session, url, headers, self.bodies, clients, expect_duplicates=duplicates
                    )

                columnar_headers = {
                    **headers,
                    "Content-Type": COLUMNAR_MEDIA_TYPE,
                    "Content-Encoding": "zstd",
                }

                def post_columnar() -> Any:
                    return _post_concurrently(
                        session, url, columnar_headers, self.columnar_bodies, 1
                    )

                # Warm-up, not measured: pool connections, code paths, caches on both sides.
                reset_tables(admin)
                copy_batches(copy_conn, self.copy_batches[:2])
                await _post_concurrently(session, url, headers, self.bodies[:2], 1)
                await _post_concurrently(
                    session, url, headers, self.bodies[:2], 1, expect_duplicates=True
                )
                reset_tables(admin)
                await _post_concurrently(
                    session, url, columnar_headers, self.columnar_bodies[:2], 1
                )
                if influx:
                    influx.reset_database()
                    await write_lines(session, influx.write_url(), self.influx_bodies[:2])

                async def timed(name: str, action: Callable[[], Any], reset: bool) -> None:
                    if time.monotonic() > deadline:
                        raise BenchError(f"time limit of {self.args.time_limit:g} s exceeded")
                    if reset:
                        reset_tables(admin)
                        if influx and name == "influx-1":
                            influx.reset_database()
                    before = meters.read()
                    result = action()
                    if asyncio.iscoroutine(result):
                        await result
                    samples[name].append(meters.sample(self.rows, before))

                units = ["copy", "http-1", "col-1", "http-2", *(["influx-1"] if influx else [])]
                for rep in range(self.args.reps):
                    shift = rep % len(units)
                    for unit in units[shift:] + units[:shift]:
                        if unit == "copy":
                            await timed(
                                "copy", lambda: copy_batches(copy_conn, self.copy_batches), True
                            )
                        elif unit == "http-1":
                            await timed("http-1", post(1), True)
                            await timed("dup-1", post(1, duplicates=True), False)
                            self._check_stored(admin)
                        elif unit == "col-1":
                            await timed("col-1", post_columnar, True)
                            self._check_stored(admin)
                        elif unit == "http-2":
                            await timed("http-2", post(2), True)
                            self._check_stored(admin)
                        elif influx:
                            await timed(
                                "influx-1",
                                lambda: write_lines(
                                    session, influx.write_url(), self.influx_bodies
                                ),
                                True,
                            )
                            if (stored := influx.count_rows()) != self.rows:
                                raise BenchError(f"influxd holds {stored} rows, not {self.rows}")
                    print(f"  rep {rep + 1}/{self.args.reps} done", file=sys.stderr)
        return samples

    def _check_stored(self, admin: psycopg.Connection[Any]) -> None:
        row = admin.execute("SELECT count(*) FROM fleet.power_measurements").fetchone()
        if row is None or row[0] != self.rows:
            raise BenchError(f"central table holds {row} rows, expected {self.rows}")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rows", dest="rows_per_rep", type=int, default=100_000)
    parser.add_argument("--batch-size", type=int, default=5_000)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--devices", type=int, default=20, help="meters the rows cycle through")
    parser.add_argument(
        "--sample-age-days", type=float, default=30.0, help="the first sample is this old"
    )
    parser.add_argument("--gzip-level", type=int, default=1, help="of the JSON bodies")
    parser.add_argument("--no-peer", action="store_true", help="skip the InfluxDB peer")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument(
        "--time-limit", type=float, default=600.0, help="seconds; abort beyond (default 600)"
    )
    return parser


def _peer(args: argparse.Namespace) -> tuple[InfluxdProcess | None, dict[str, Any]]:
    """The InfluxDB child (not started yet), or None and why it is skipped."""
    if args.no_peer:
        return None, {"skipped": "--no-peer"}
    binary = influxd_binary()
    if binary is None:
        return None, {
            "skipped": "influxd not found (install Debian's influxdb: apt-get install influxdb)"
        }
    return InfluxdProcess(binary), {"binary": binary}


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if not (1 <= args.batch_size <= args.rows_per_rep <= 10_000_000 and 1 <= args.reps <= 100):
        print("need 1 <= batch-size <= rows <= 10M and 1 <= reps <= 100", file=sys.stderr)
        return 2
    exit_on_sigterm()
    started = time.monotonic()
    influx, peer = _peer(args)
    if influx is None:
        print(f"peer ratio skipped: {peer['skipped']}", file=sys.stderr)
    with temporary_cluster(prefix="fleet-bench-pg-") as cluster:
        from ingestd.customers import add_customer

        dsn = create_central_database(cluster)
        token = add_customer(dsn, CUSTOMER_CODE, "Benchmark customer")
        cid = customer_id(dsn, CUSTOMER_CODE)
        print(f"generating and encoding {args.rows_per_rep:,} rows…", file=sys.stderr)
        rows = generate_measurements(
            args.rows_per_rep,
            devices=args.devices,
            start=datetime.now(UTC) - timedelta(days=args.sample_age_days),
        )
        create_baseline_table(dsn, [row[0] for row in rows])
        copy_rows = stored_rows(rows, cid)
        item_batches = chunks(measurement_items(rows), args.batch_size)
        bodies = [(encode_batch(items, args.gzip_level), len(items)) for items in item_batches]
        columnar_bodies = [(columnar_body(items), len(items)) for items in item_batches]
        influx_bodies = line_protocol_bodies(rows, CUSTOMER_CODE) if influx else []
        wire = sum(len(b) for b, _ in bodies)
        print(
            f"{len(bodies)} batches, {wire / len(bodies) / 1024:.0f} KiB gzip each on average",
            file=sys.stderr,
        )

        with IngestdProcess(dsn) as ingestd, influx or contextlib.nullcontext():
            if influx:
                peer["version"] = influx.version()
                peer["mean_gzip_body_bytes"] = sum(len(b) for b, _ in influx_bodies) / len(
                    influx_bodies
                )
            bench = Bench(
                args,
                cluster,
                dsn,
                ingestd,
                token,
                chunks(copy_rows, args.batch_size),
                bodies,
                columnar_bodies,
                influx,
                influx_bodies,
            )
            samples = asyncio.run(bench.run())
            peak_rss = peak_rss_bytes(ingestd.pid)
            machine = machine_info(dsn)

    extra = {
        "benchmark": "ingest",
        "config": {
            "rows_per_rep": args.rows_per_rep,
            "batch_size": args.batch_size,
            "reps": args.reps,
            "devices": args.devices,
            "sample_age_days": args.sample_age_days,
            "gzip_level": args.gzip_level,
            "mean_gzip_body_bytes": wire / len(bodies),
            "mean_columnar_body_bytes": sum(len(b) for b, _ in columnar_bodies)
            / len(columnar_bodies),
        },
        "peer": peer,
        "machine": machine,
        "ingestd_peak_rss_mib": peak_rss / 1024 / 1024,
        "runtime_s": time.monotonic() - started,
    }
    result = report(samples, args, extra)
    finish("ingest", result, figures(result), args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
