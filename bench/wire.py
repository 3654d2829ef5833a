"""Wire cost: upstream bytes per row, all in, counted on the wire between the pusher and ingestd.

    uv run python bench/wire.py [--ticks 30] [--backlog-minutes 1440] [--modes columnar,json]
                                [--sites 2 --devices-per-site 10]

20 meters (fleetdev.simulator's `Meter`: daily load curve, counting energy registers) write
readings at meter resolution (V 0.1, A/kW/kvar/kVA/pf 0.001, Hz 0.01, kWh 0.1, THD 0.01) into a
meter stack's database; a real `pusher run` sends them to a real `ingestd serve` through a
counting TCP proxy on loopback (`counting_proxy.py`) that counts every byte the pusher sends
(request lines, headers, bodies) and splits them per request and batch type.

For each pusher wire mode (`PUSHER_WIRE_FORMAT`):

1. steady state: one reading per meter per tick (sample times a minute apart, paced as fast as
   the pusher ships them), each tick waiting for the previous one to arrive centrally: the bytes
   of every request sent during `--ticks` ticks after a warm-up, plus the full sets of sites and
   devices amortized over an hour of 1-minute ticks when none was sent in the window (the pusher
   resends them when they change or every PUSHER_FULL_SET_INTERVAL_S, 1 h by default);
2. backlog: the pusher stopped, a day of readings (28,800 rows) written hour by hour as a meter
   replays its buffer, the pusher started: every byte until all rows are stored centrally.

In steady state the pusher's health reports (docs/PROTOCOL.md) are counted apart: the bytes of
one report request as sent, those sent in the window (a report goes when what it says changes:
none should), and the hourly refresh amortized over an hour of 1-minute ticks like the full sets,
as a share of the data's bytes (`health.overhead_pct`; issue 20's target: at most 2 % at 27
meters, `--sites 3 --devices-per-site 9`).

Next to them, the same rows encoded as bodies alone (no HTTP): gzip-1 JSON (the pusher's JSON
body), InfluxDB line protocol gzip-6, Prometheus remote-write 1.0 (protobuf `WriteRequest`, one
series per meter and field, snappy block format via cramjam) and the columnar encoding
(`peer_bodies.py`). Plain HTTP on loopback: TLS would add ~22-29 bytes per request record and
a handshake per connection.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import psycopg
from common import IngestdProcess, exit_on_sigterm, machine_info, terminate
from counting_proxy import CountingProxy, Request
from fleetcore import MEASUREMENT_VALUE_FIELDS
from fleetdev.pgcluster import temporary_cluster
from fleetdev.simulator import INSERT_SAMPLE, Meter, MeterStack
from peer_bodies import Row, body_sizes
from pusher.migrate import apply_migrations
from pusher.ops.health import REFRESH_S
from report import Figure, Target, finish

RESOLUTION: dict[str, int] = {
    **dict.fromkeys(("v1", "v2", "v3", "v12", "v23", "v31"), 1),
    **dict.fromkeys(("i1", "i2", "i3", "i_n", "p1", "p2", "p3", "p_total"), 3),
    **dict.fromkeys(("q_total", "s_total", "pf_total"), 3),
    "freq": 2,
    **dict.fromkeys(
        ("energy_imp_kwh", "energy_exp_kwh", "energy_q_imp_kvarh", "energy_q_exp_kvarh"), 1
    ),
    "thd_v": 2,
    "thd_i": 2,
}
DEVICES_PER_SITE = 10
SITES = 2


# --- meters -----------------------------------------------------------------------------------


def reading(meter: Meter, when: datetime) -> Row:
    values = meter.sample(when, 60.0)
    row: Row = {"time": when, "device_id": meter.device_id}
    for name, value in zip(MEASUREMENT_VALUE_FIELDS, values, strict=True):
        row[name] = round(value, RESOLUTION[name])
    return row


def write_rows(dsn: str, rows: Sequence[Row]) -> None:
    """One transaction, as a meter stack writes a tick (or replays a buffer)."""
    params = [(r["device_id"], r["time"], *(r[n] for n in MEASUREMENT_VALUE_FIELDS)) for r in rows]
    with psycopg.connect(dsn) as conn, conn.cursor() as cur:
        cur.executemany(INSERT_SAMPLE, params)


def central_count(dsn: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM fleet.power_measurements").fetchone()
    return int(row[0]) if row else 0


def wait_for(dsn: str, expected: int, timeout_s: float, pusher: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if central_count(dsn) >= expected:
            return
        if pusher.poll() is not None:
            raise RuntimeError(f"pusher exited with {pusher.returncode}")
        time.sleep(0.02)
    raise RuntimeError(f"{expected} rows not stored centrally within {timeout_s:g} s")


@contextlib.contextmanager
def pusher_running(env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pusher", "run"],
            env={**os.environ, **env},
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            yield proc
        finally:
            terminate(proc)


# --- the run ----------------------------------------------------------------------------------


def summarize(requests: Sequence[Request]) -> dict[str, Any]:
    by_type: dict[str, dict[str, int]] = {}
    for r in requests:
        entry = by_type.setdefault(r.batch_type, {"requests": 0, "head": 0, "body": 0})
        entry["requests"] += 1
        entry["head"] += r.head_bytes
        entry["body"] += r.body_bytes
    return by_type


def run_mode(
    mode: str,
    args: argparse.Namespace,
    customer: str,
    central: str,
    ingestd: IngestdProcess,
    token: str,
    logs: Path,
) -> dict[str, Any]:
    random.seed(1)
    with psycopg.connect(customer, autocommit=True) as conn:
        conn.execute("TRUNCATE monitoring.power_measurements")
        conn.execute("DELETE FROM app.fleet_push_state")
    with psycopg.connect(central, autocommit=True) as conn:
        conn.execute("TRUNCATE fleet.power_measurements_scaled, fleet.ingest_events")
    stack = MeterStack(customer, args.sites, args.devices_per_site)
    stack.install()
    meters = stack.meters
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(days=2)
    with CountingProxy(ingestd.port) as proxy:
        env = {
            "PUSHER_PUSH_ENABLED": "true",
            "PUSHER_DATABASE_URL": customer,
            "PUSHER_INGEST_URL": f"http://127.0.0.1:{proxy.port}",
            "PUSHER_TOKEN": token,
            "PUSHER_PUSH_INTERVAL_S": "0.05",
            "PUSHER_WIRE_FORMAT": mode,
            "PUSHER_BACKOFF_BASE_S": "0.2",
            "PUSHER_BACKOFF_CAP_S": "1",
            "PUSHER_LOG_FORMAT": "json",
        }
        stored = 0
        minute = 0

        def tick() -> list[Row]:
            nonlocal minute
            when = start + timedelta(minutes=minute)
            minute += 1
            return [reading(m, when) for m in meters]

        with pusher_running(env, logs / f"pusher-{mode}-steady.log") as pusher:
            steady_rows: list[list[Row]] = []
            for i in range(args.warmup_ticks + args.ticks):
                if i == args.warmup_ticks:
                    first = len(proxy.requests)
                    connections = proxy.connections
                rows = tick()
                write_rows(customer, rows)
                stored += len(rows)
                wait_for(central, stored, 30, pusher)
                if i >= args.warmup_ticks:
                    steady_rows.append(rows)
            window = proxy.requests[first:]
            warmup = proxy.requests[:first]
            steady_connections = proxy.connections - connections
        full_sets = [r for r in warmup if r.batch_type in ("sites", "devices")]
        set_bytes = sum(r.total for r in full_sets)
        sets_in_window = sum(1 for r in window if r.batch_type in ("sites", "devices"))
        reports = [r for r in proxy.requests if r.batch_type == "-"]  # no X-Batch-Type
        reports_in_window = [r for r in window if r.batch_type == "-"]
        window = [r for r in window if r.batch_type != "-"]
        window_bytes = sum(r.total for r in window)
        ticks_per_hour = 60
        amortized = 0.0 if sets_in_window else set_bytes * args.ticks / ticks_per_hour
        steady_rows_n = args.ticks * len(meters)
        report_bytes = reports[0].total if reports else 0
        refresh = report_bytes * args.ticks * 60 / REFRESH_S  # a tick is a minute
        health_bytes = sum(r.total for r in reports_in_window) + refresh
        steady = {
            "ticks": args.ticks,
            "rows": steady_rows_n,
            "requests": summarize(window),
            "full_sets_in_window": sets_in_window,
            "full_set_bytes_at_start": set_bytes,
            "full_set_bytes_amortized": round(amortized),
            "new_connections_in_window": steady_connections,
            "bytes_per_row": round((window_bytes + amortized) / steady_rows_n, 1),
            "bytes_per_row_measurements_only": round(
                sum(r.total for r in window if r.batch_type == "measurements") / steady_rows_n, 1
            ),
            "health": {
                "bytes_per_report_request": report_bytes,
                "report_body_bytes": reports[0].body_bytes if reports else 0,
                "reports_in_window": len(reports_in_window),
                "refresh_bytes_amortized": round(refresh, 1),
                "overhead_pct": round(100 * health_bytes / (window_bytes + amortized), 2),
            },
        }

        # Backlog: a day of readings written while the pusher is down, an hour per transaction.
        backlog_rows: list[Row] = []
        for _hour in range(args.backlog_minutes // 60):
            hour = [row for _ in range(60) for row in tick()]
            write_rows(customer, hour)
            backlog_rows.extend(hour)
        first = len(proxy.requests)
        connections = proxy.connections
        started = time.perf_counter()
        with pusher_running(env, logs / f"pusher-{mode}-backlog.log") as pusher:
            stored += len(backlog_rows)
            wait_for(central, stored, 600, pusher)
            drain_s = time.perf_counter() - started
            drained = proxy.requests[first:]
            backlog_connections = proxy.connections - connections
        backlog = {
            "rows": len(backlog_rows),
            "drain_s": round(drain_s, 2),
            "requests": summarize(drained),
            "new_connections": backlog_connections,
            "bytes_per_row": round(sum(r.total for r in drained) / len(backlog_rows), 1),
        }
    received = start
    peers = {
        "steady_20_rows_per_body": body_sizes(steady_rows, received),
        "backlog_5000_rows_per_body": body_sizes(
            [backlog_rows[i : i + 5000] for i in range(0, len(backlog_rows), 5000)], received
        ),
    }
    return {"steady": steady, "backlog": backlog, "bodies_alone": peers}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ticks", type=int, default=30, help="steady-state ticks measured")
    parser.add_argument("--warmup-ticks", type=int, default=3)
    parser.add_argument("--backlog-minutes", type=int, default=1440, help="a day: 28,800 rows")
    parser.add_argument("--modes", default="auto,json", help="PUSHER_WIRE_FORMAT values")
    parser.add_argument("--sites", type=int, default=SITES)
    parser.add_argument("--devices-per-site", type=int, default=DEVICES_PER_SITE)
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    exit_on_sigterm()
    logs = Path(__file__).resolve().parent / "results" / "wire-logs"
    logs.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"modes": {}, "meters": args.sites * args.devices_per_site}
    with temporary_cluster(prefix="fleet-bench-wire-") as cluster:
        customer = cluster.create_database("customer")
        central = cluster.create_database("central")
        env = {**os.environ, "INGESTD_DATABASE_URL": central, "INGESTD_TIMESCALEDB": "off"}
        subprocess.run(
            [sys.executable, "-m", "ingestd", "migrate"], env=env, check=True, capture_output=True
        )
        token = subprocess.run(
            [sys.executable, "-m", "ingestd", "customers", "add", "BENCH"],
            env=env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.split()[0]
        apply_migrations(customer)
        results["machine"] = machine_info(central)
        with IngestdProcess(central) as ingestd:
            for mode in args.modes.split(","):
                print(f"=== {mode}", flush=True)
                results["modes"][mode] = run_mode(
                    mode, args, customer, central, ingestd, token, logs
                )
                print(msgspec.json.format(msgspec.json.encode(results["modes"][mode])).decode())
    finish("wire", results, figures(results), args.json)
    return 0


# Upstream bytes per row, all in, of the columnar encoding (PUSHER_WIRE_FORMAT=auto).
TARGETS = {"steady": Target("<=", 50.0), "backlog": Target("<=", 36.0)}
# Health reports' share of a steady gateway's upstream bytes (issue 20: at 27 meters a minute).
HEALTH_TARGET = Target("<=", 2.0, " %")


def figures(results: dict[str, Any]) -> list[Figure]:
    out = []
    for mode, measured in results["modes"].items():
        columnar = mode == "auto"
        for phase, target in TARGETS.items():
            f = measured[phase]
            requests = sum(r["requests"] for r in f["requests"].values())
            out.append(
                Figure.of(
                    f"6. upstream bytes/row all in, {phase}, {'columnar' if columnar else mode}",
                    f"{f['bytes_per_row']:.1f}",
                    f"{f['rows']:,} rows; {requests} requests",
                    target if columnar else "",
                    target.met(f["bytes_per_row"]) if columnar else None,
                )
            )
        health = measured["steady"]["health"]
        out.append(
            Figure.checked(
                f"20. health reports' share of steady bytes, {mode}",
                health["overhead_pct"],
                f"{health['overhead_pct']:.2f} %",
                HEALTH_TARGET,
                f"{results['meters']} meters; a report {health['bytes_per_report_request']} B "
                f"all in, {health['reports_in_window']} in the window, hourly refresh amortized",
            )
        )
    bodies = next(iter(results["modes"].values()))["bodies_alone"]["backlog_5000_rows_per_body"]
    out.append(
        Figure.of(
            "6. bodies alone, 5,000-row batches, bytes/row",
            f"columnar {bodies['columnar_zstd']}",
            f"gzip JSON {bodies['gzip1_json']}, Influx LP gzip-6 "
            f"{bodies['influx_line_protocol_gzip6']}, Prom remote-write "
            f"{bodies['prometheus_remote_write_snappy']}",
        )
    )
    return out


if __name__ == "__main__":
    sys.exit(main())
