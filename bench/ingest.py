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

What the rows look like changes the ratio: `--devices` (meters per batch), `--sample-age-days`
(how old the samples are: the weeks they fall in, the hourly marks they make) and `--gzip-level`
of the JSON bodies reproduce other runs' set-ups (an outside run: 100 meters, ten-month-old
samples, gzip-5: `--devices 100 --sample-age-days 300 --gzip-level 5`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import psycopg
from common import (
    IngestdProcess,
    Summary,
    cpu_seconds,
    create_central_database,
    customer_id,
    exit_on_sigterm,
    machine_info,
    peak_rss_bytes,
    postgres_cpu_seconds,
    summarize,
)
from fleetcore import MEASUREMENT_VALUE_FIELDS, columns_from_rows, encode_columns, zstd_compress
from fleetcore.protocol import COLUMNAR_MEDIA_TYPE
from fleetcore.resolution import RESOLUTIONS, scaled_or_none
from fleetdev.pgcluster import PgCluster, temporary_cluster
from ingestd.storage.copybuffer import COPY_COLUMNS as STORED_COLUMNS
from peer_influx import InfluxdProcess, influxd_binary, line_protocol_bodies, write_lines
from psycopg import sql
from report import Figure, Target, finish
from rows import MeasurementTuple, chunks, encode_batch, generate_measurements, measurement_items

INGEST_PATH = "/api/fleet/ingest"
CUSTOMER_CODE = "BENCH01"
COPY_TABLE = "bench_copy"
TARGET_RATIO = Target(">=", 0.5, "x")
TARGET_COLUMNAR_RATIO = Target(">=", 0.7, "x")
TARGET_PEER_RATIO = Target(">=", 2.0, "x")

CREATE_COPY_TABLE = (
    f"CREATE TABLE {COPY_TABLE} (LIKE fleet.power_measurements_scaled INCLUDING ALL)"
)
RESET_TABLES = f"TRUNCATE {COPY_TABLE}, fleet.power_measurements_scaled"
COPY_STATEMENT = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
    sql.Identifier(COPY_TABLE), sql.SQL(", ").join(sql.Identifier(c) for c in STORED_COLUMNS)
)
_STORAGE_TYPES = {"integer": "int4", "bigint": "int8"}
STORED_TYPES: tuple[str, ...] = (
    "timestamptz",
    "int8",
    "timestamptz",
    *(_STORAGE_TYPES[RESOLUTIONS[f].storage_type] for f in MEASUREMENT_VALUE_FIELDS),
    *("float8",) * len(MEASUREMENT_VALUE_FIELDS),
    "int8",
)
"""The types of `STORED_COLUMNS`: ingestd's COPY columns, in its order."""

SCENARIOS = {
    "copy": "binary COPY, 1 connection (baseline)",
    "http-1": "ingestd HTTP gzip JSON, 1 client",
    "col-1": "ingestd HTTP columnar zstd, 1 client",
    "http-2": "ingestd HTTP gzip JSON, 2 clients",
    "dup-1": "re-delivery, all duplicates, 1 client",
    "influx-1": "InfluxDB 1.x line protocol, 1 client (peer)",
}
_decode_response = msgspec.json.Decoder(dict[str, Any]).decode


def columnar_body(items: Sequence[dict[str, Any]]) -> bytes:
    """The pusher's columnar zstd body of these items (meter by meter, in time)."""
    ordered = sorted(items, key=lambda r: (r["device_id"], r["time"]))
    return zstd_compress(encode_columns(columns_from_rows(ordered)))


class BenchError(RuntimeError):
    """A run that cannot be trusted: a refused batch, a wrong count, a blown time budget."""


@dataclass(frozen=True, slots=True)
class Sample:
    """One timed pass over all batches."""

    rows: int
    wall_s: float
    ingestd_cpu_s: float
    postgres_cpu_s: float
    client_cpu_s: float
    influxd_cpu_s: float

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.wall_s

    def us_per_row(self, cpu_s: float) -> float:
        return 1e6 * cpu_s / self.rows


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


def _reset(admin: psycopg.Connection[Any]) -> None:
    """Empty both tables. ingestd's housekeeping may be packing a closed week's index (`REINDEX
    INDEX CONCURRENTLY`, which waits for older transactions) as the TRUNCATE asks for its lock:
    PostgreSQL then ends the TRUNCATE as a deadlock, and it is tried again (up to 5 times)."""
    for attempt in range(5):
        try:
            admin.execute(RESET_TABLES)
            break
        except psycopg.errors.DeadlockDetected:
            if attempt == 4:
                raise
            time.sleep(1.0)
    admin.execute("CHECKPOINT")


def _create_baseline_table(dsn: str, times: Sequence[Any]) -> None:
    """The baseline table is identical to the central one: partitioned by week like it (as
    `ingestd migrate` leaves it without TimescaleDB), with the same keys. Both get the weeks of
    the rows made up front, so neither run pays for creating a partition while timed."""
    import asyncio

    from ingestd.storage.partitions import WEEK, ensure_partitions, week_start
    from psycopg import AsyncConnection

    weeks = []
    week, last = week_start(min(times)), week_start(max(times))
    while week <= last:
        weeks.append(week)
        week += WEEK

    async def central_weeks() -> None:
        async with await AsyncConnection.connect(dsn, autocommit=True) as conn:
            await ensure_partitions(conn, weeks)

    asyncio.run(central_weeks())
    with psycopg.connect(dsn, autocommit=True) as conn:
        kind = conn.execute(
            "SELECT relkind::text FROM pg_class WHERE oid = 'fleet.power_measurements_scaled'::regclass"
        ).fetchone()
        if kind and kind[0] == "p":
            conn.execute(CREATE_COPY_TABLE + " PARTITION BY RANGE (time)")
            for start in weeks:
                conn.execute(
                    sql.SQL("CREATE TABLE {} PARTITION OF {} FOR VALUES FROM ({}) TO ({})").format(
                        sql.Identifier(f"{COPY_TABLE}_{start:%Y%m%d}"),
                        sql.Identifier(COPY_TABLE),
                        sql.Literal(start),
                        sql.Literal(start + WEEK),
                    )
                )
        else:
            conn.execute(CREATE_COPY_TABLE)


def stored_rows(rows: Sequence[MeasurementTuple], customer: int) -> list[tuple[Any, ...]]:
    """The rows as ingestd stores them (`STORED_COLUMNS`): the baseline does the same writes,
    not 24 doubles where ingestd writes 24 integers and 24 nulls. Split before any clock starts,
    by fleetcore's rule (`scaled_or_none`), which ingestd's vectorised split follows."""
    resolutions = [RESOLUTIONS[f] for f in MEASUREMENT_VALUE_FIELDS]
    out = []
    for time_, device, received, *values in rows:
        scaled = [
            None if v is None else scaled_or_none(v, r)
            for v, r in zip(values, resolutions, strict=True)
        ]
        exact = [v if k is None else None for v, k in zip(values, scaled, strict=True)]
        out.append((time_, device, received, *scaled, *exact, customer))
    return out


def _copy_batches(conn: psycopg.Connection[Any], batches: Sequence[Sequence[Any]]) -> None:
    types = list(STORED_TYPES)
    for batch in batches:
        with conn.transaction(), conn.cursor() as cur, cur.copy(COPY_STATEMENT) as copy:
            copy.set_types(types)
            for row in batch:
                copy.write_row(row)


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
                _reset(admin)
                _copy_batches(copy_conn, self.copy_batches[:2])
                await _post_concurrently(session, url, headers, self.bodies[:2], 1)
                await _post_concurrently(
                    session, url, headers, self.bodies[:2], 1, expect_duplicates=True
                )
                _reset(admin)
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
                        _reset(admin)
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
                                "copy", lambda: _copy_batches(copy_conn, self.copy_batches), True
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


def _paired(samples: dict[str, list[Sample]], top: str, bottom: str) -> list[float]:
    """Per-repetition ratios: a slow spell of the shared machine hits both sides of a pair."""
    return [a.rows_per_s / b.rows_per_s for a, b in zip(samples[top], samples[bottom], strict=True)]


def _target(label: str, ratio: float, paired: list[float], target: Target) -> dict[str, Any]:
    print(
        f"{label}: ratio of medians {ratio:.2f}x; per-rep ratios median "
        f"{statistics.median(paired):.2f}x, range {min(paired):.2f}-{max(paired):.2f}"
    )
    return {
        "target": target.bound,
        "ratio": ratio,
        "paired_ratios": paired,
        "met": target.met(ratio),
    }


def _report(
    samples: dict[str, list[Sample]], args: argparse.Namespace, extra: dict[str, Any]
) -> dict[str, Any]:
    names = [name for name in SCENARIOS if name in samples]
    rates = {name: summarize([s.rows_per_s for s in samples[name]]) for name in names}
    copy = rates["copy"]
    print()
    print(
        f"{args.rows_per_rep:,} rows per rep in {args.batch_size:,}-row batches, "
        f"{args.reps} reps, median (min-max)"
    )
    header = f"{'scenario':<44} {'rows/s':>9} {'min-max':>17} {'spread':>7} {'x COPY':>7}"
    print(header)
    print("-" * len(header))
    for name in names:
        r = rates[name]
        span = f"{r.low:,.0f}-{r.high:,.0f}"
        print(
            f"{SCENARIOS[name]:<44} {r.median:>9,.0f} {span:>17} {r.spread_pct:>6.0f}% "
            f"{r.median / copy.median:>7.2f}"
        )

    print()
    header = (
        f"{'CPU µs per row, median':<44} {'ingestd':>9} {'postgres':>9} {'influxd':>9} "
        f"{'client':>9}"
    )
    print(header)
    print("-" * len(header))
    cpu: dict[str, dict[str, Summary]] = {}
    for name in names:
        runs = samples[name]
        cpu[name] = {
            "ingestd": summarize([s.us_per_row(s.ingestd_cpu_s) for s in runs]),
            "postgres": summarize([s.us_per_row(s.postgres_cpu_s) for s in runs]),
            "influxd": summarize([s.us_per_row(s.influxd_cpu_s) for s in runs]),
            "client": summarize([s.us_per_row(s.client_cpu_s) for s in runs]),
        }
        c = {k: v.median for k, v in cpu[name].items()}
        print(
            f"{SCENARIOS[name]:<44} {c['ingestd']:>9.1f} {c['postgres']:>9.1f} "
            f"{c['influxd']:>9.1f} {c['client']:>9.1f}"
        )

    print()
    ingestd_cpu = cpu["http-1"]["ingestd"]
    print(
        f"ingestd CPU per row (parse, validate, write; 1 client): {ingestd_cpu.median:.2f} µs "
        f"(min-max {ingestd_cpu.low:.2f}-{ingestd_cpu.high:.2f})"
    )
    targets = {
        "ingest_1_client_vs_copy": _target(
            "ingest with 1 client vs binary COPY",
            rates["http-1"].median / copy.median,
            _paired(samples, "http-1", "copy"),
            TARGET_RATIO,
        )
    }
    targets["columnar_1_client_vs_copy"] = _target(
        "ingest of columnar zstd with 1 client vs binary COPY",
        rates["col-1"].median / copy.median,
        _paired(samples, "col-1", "copy"),
        TARGET_COLUMNAR_RATIO,
    )
    col_cpu = cpu["col-1"]["ingestd"]
    print(
        f"ingestd CPU per row, columnar zstd: {col_cpu.median:.2f} µs "
        f"(min-max {col_cpu.low:.2f}-{col_cpu.high:.2f})"
    )
    if "influx-1" in rates:
        targets["fleet_vs_influxdb"] = _target(
            "Fleet (ingestd, 1 client) vs InfluxDB 1.x (1 client)",
            rates["http-1"].median / rates["influx-1"].median,
            _paired(samples, "http-1", "influx-1"),
            TARGET_PEER_RATIO,
        )
    else:
        print(f"peer ratio: SKIPPED ({extra['peer']['skipped']})")
    print(f"ingestd peak RSS: {extra['ingestd_peak_rss_mib']:.0f} MiB")

    def summary_dict(s: Summary) -> dict[str, Any]:
        return {"median": s.median, "min": s.low, "max": s.high, "samples": list(s.samples)}

    return {
        "scenarios": {
            name: {
                "label": SCENARIOS[name],
                "rows_per_s": summary_dict(rates[name]),
                "ratio_to_copy": rates[name].median / copy.median,
                "cpu_us_per_row": {k: v.median for k, v in cpu[name].items()},
                "samples": [asdict(s) for s in samples[name]],
            }
            for name in names
        },
        "ingestd_cpu_us_per_row": summary_dict(ingestd_cpu),
        "ingestd_cpu_us_per_row_columnar": summary_dict(col_cpu),
        "targets": targets,
        **extra,
    }


def figures(result: dict[str, Any]) -> list[Figure]:
    sc, tg = result["scenarios"], result["targets"]
    out = [
        Figure.of(
            f"rows/s: {sc[name]['label']}",
            f"{sc[name]['rows_per_s']['median']:,.0f}",
            f"{sc[name]['rows_per_s']['min']:,.0f}-{sc[name]['rows_per_s']['max']:,.0f}",
        )
        for name in ("copy", "http-1", "col-1", "http-2", "dup-1", "influx-1")
        if name in sc
    ]

    def ratio(figure: str, key: str, target: Target) -> Figure:
        t = tg[key]
        spread = f"per rep {min(t['paired_ratios']):.2f}-{max(t['paired_ratios']):.2f}"
        return Figure.checked(figure, t["ratio"], f"{t['ratio']:.2f}x", target, spread)

    out.append(ratio("1. ingest 1 client / binary COPY", "ingest_1_client_vs_copy", TARGET_RATIO))
    out.append(
        ratio(
            "1b. ingest columnar zstd 1 client / binary COPY",
            "columnar_1_client_vs_copy",
            TARGET_COLUMNAR_RATIO,
        )
    )
    if "fleet_vs_influxdb" in tg:
        out.append(
            ratio(
                "2. Fleet / InfluxDB 1.x rows/s (1 client)", "fleet_vs_influxdb", TARGET_PEER_RATIO
            )
        )
    else:
        why = result["peer"].get("skipped")
        out.append(
            Figure(
                "2. Fleet / InfluxDB 1.x rows/s",
                "SKIPPED",
                "",
                str(TARGET_PEER_RATIO),
                f"SKIPPED: {why}",
            )
        )
    for figure, key, target in (
        ("5b. ingestd CPU µs per row, columnar zstd", "ingestd_cpu_us_per_row_columnar", ""),
        ("5. ingestd CPU µs per row (1 client)", "ingestd_cpu_us_per_row", "(regression guard)"),
    ):
        c = result[key]
        out.append(
            Figure.of(figure, f"{c['median']:.2f}", f"{c['min']:.2f}-{c['max']:.2f}", target)
        )
    return out


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
        _create_baseline_table(dsn, [row[0] for row in rows])
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
    result = _report(samples, args, extra)
    finish("ingest", result, figures(result), args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
