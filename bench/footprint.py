"""Pusher footprint: start-to-first-request, RSS idle and under a steady meter load, over time.

    uv run python bench/footprint.py [--duration 120] [--devices 100] [--encoder stdlib]

One throwaway PostgreSQL cluster holds a customer and a central database; ingestd runs as a
subprocess, and `pusher run` (a subprocess too, PUSHER_COLUMNAR_ENCODER=stdlib by default: a
gateway's, no numpy) pushes to it through a loopback relay in this process that notes when the
first request's bytes arrive:

1. start: from starting the pusher process to its first request (the sites full set), and its
   RSS right then;
2. idle: `--idle-s` seconds with nothing new to send (ticks every `--interval` seconds);
3. load: `--duration` seconds in which every one of `--devices` meters writes a sample each
   second (all 24 values), as a meter stack does; the pusher ships them every tick.

RSS (VmRSS) is sampled every second; reported per phase: median, max, and for the load phase
its first and last minute and the slope over its second half (MiB per 10 minutes: a flat pusher
is near 0). Every row written must arrive centrally. Results go to bench/results/footprint-<time>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from common import RESULTS_DIR, exit_on_sigterm, rss_bytes
from fleetdev.pgcluster import free_port, temporary_cluster
from gateway_venv import add_pusher_python_argument, pusher_python
from pusher.migrate import apply_migrations
from pusher_stack import (
    SEED_DEVICES,
    SEED_ROUNDING,
    SEED_SITES,
    Child,
    scalar,
    start_ingestd,
)
from report import Figure, Target, finish

TARGET_START = Target("<=", 0.5, " s")
TARGET_RSS = Target("<=", 40.0, " MiB")
TARGET_SLOPE = Target("<=", 1.0, " MiB per 10 min", of="second half")

TICK_ROWS = """
INSERT INTO monitoring.power_measurements (
    device_id, time, received_at, v1, v2, v3, v12, v23, v31, i1, i2, i3, i_n, p1, p2, p3, p_total,
    q_total, s_total, pf_total, freq, energy_imp_kwh, energy_exp_kwh, energy_q_imp_kvarh,
    energy_q_exp_kvarh, thd_v, thd_i)
SELECT d, date_trunc('second', now()), now(),
       pg_temp.r(229, 3), pg_temp.r(229, 3), pg_temp.r(229, 3),
       pg_temp.r(397, 4), pg_temp.r(397, 4), pg_temp.r(397, 4),
       pg_temp.r(10, 5), pg_temp.r(10, 5), pg_temp.r(10, 5), pg_temp.r(0, 1),
       pg_temp.r(2, 1), pg_temp.r(2, 1), pg_temp.r(2, 1), pg_temp.r(7, 2),
       pg_temp.r(1, 1), pg_temp.r(7, 2), pg_temp.r(0.9, 0.1), pg_temp.r(49.95, 0.1),
       round(100000 + %(n)s * 0.1, 1), round(%(n)s * 0.01, 2), 5000, 0, pg_temp.r(1.5, 1),
       pg_temp.r(4, 2)
FROM generate_series(1, %(devices)s) AS d
ON CONFLICT DO NOTHING
"""


class FirstRequestRelay:
    """A loopback TCP relay to ingestd that notes the monotonic time of the first bytes."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = free_port()
        self.first_request_at: float | None = None
        self._ready = threading.Event()
        threading.Thread(target=lambda: asyncio.run(self._serve()), daemon=True).start()
        self._ready.wait(10)

    async def _serve(self) -> None:
        server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)
        self._ready.set()
        async with server:
            await server.serve_forever()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, note: bool) -> None:
            try:
                while chunk := await src.read(65536):
                    if note and self.first_request_at is None:
                        self.first_request_at = time.monotonic()
                    dst.write(chunk)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer, True), pipe(up_reader, writer, False))


def _mib(pid: int) -> float:
    return rss_bytes(pid) / 2**20


def _summary(samples: list[tuple[float, float]]) -> dict[str, Any]:
    """Median and max RSS, first and last minute, and the slope over the second half."""
    if not samples:
        return {}
    values = [v for _, v in samples]
    t0 = samples[0][0]
    late = samples[len(samples) // 2 :]
    slope = 0.0
    if len(late) > 2:
        xs, ys = [t for t, _ in late], [v for _, v in late]
        mx, my = statistics.fmean(xs), statistics.fmean(ys)
        var = sum((x - mx) ** 2 for x in xs)
        slope = sum((x - mx) * (y - my) for x, y in late) / var if var else 0.0
    return {
        "samples": len(values),
        "median_mib": round(statistics.median(values), 1),
        "max_mib": round(max(values), 1),
        "first_minute_mib": round(statistics.median([v for t, v in samples if t - t0 < 60]), 1),
        "last_minute_mib": round(
            statistics.median([v for t, v in samples if samples[-1][0] - t < 60]), 1
        ),
        "slope_mib_per_10_min": round(slope * 600, 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=120.0, help="seconds of meter load")
    parser.add_argument("--idle-s", type=float, default=30.0)
    parser.add_argument("--devices", type=int, default=100)
    parser.add_argument("--interval", type=float, default=5.0, help="PUSHER_PUSH_INTERVAL_S")
    parser.add_argument("--encoder", choices=("stdlib", "numpy", "auto"), default="stdlib")
    parser.add_argument("--json", type=Path, help="write the results here")
    add_pusher_python_argument(parser)
    args = parser.parse_args(argv)
    args.pusher_python = pusher_python(args.pusher_python)
    exit_on_sigterm()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    logs = RESULTS_DIR / f"footprint-{stamp}-logs"
    logs.mkdir(parents=True)
    result: dict[str, Any] = {"devices": args.devices, "interval_s": args.interval,
                              "encoder": args.encoder, "pusher_python": args.pusher_python or sys.executable,
                              "loadavg_before": os.getloadavg()}  # fmt: skip
    with temporary_cluster(prefix="fleet-bench-footprint-") as cluster:
        customer = cluster.create_database("customer")
        central = cluster.create_database("central")
        run = {**os.environ, "INGESTD_DATABASE_URL": central, "INGESTD_TIMESCALEDB": "off"}
        subprocess.run([sys.executable, "-m", "ingestd", "migrate"], env=run, check=True,
                       capture_output=True)  # fmt: skip
        token = subprocess.run(
            [sys.executable, "-m", "ingestd", "customers", "add", "FOOT"],
            env=run, check=True, capture_output=True, text=True,
        ).stdout.split()[0]  # fmt: skip
        apply_migrations(customer)
        with psycopg.connect(customer, autocommit=True) as conn:
            conn.execute(SEED_SITES, {"sites": 10})
            conn.execute(SEED_DEVICES, {"sites": 10, "devices": args.devices})
        port = free_port()
        ingestd = start_ingestd(central, port, logs / "ingestd.log")
        relay = FirstRequestRelay(port)
        env = {
            "PUSHER_PUSH_ENABLED": "true",
            "PUSHER_DATABASE_URL": customer,
            "PUSHER_INGEST_URL": f"http://127.0.0.1:{relay.port}",
            "PUSHER_TOKEN": token,
            "PUSHER_PUSH_INTERVAL_S": str(args.interval),
            "PUSHER_COLUMNAR_ENCODER": args.encoder,
            "PUSHER_LOG_FORMAT": "json",
        }
        written = 0
        try:
            started = time.monotonic()
            pusher = Child("pusher", ["run"], env, logs / "pusher.log", args.pusher_python)
            try:
                while relay.first_request_at is None and time.monotonic() - started < 60:
                    time.sleep(0.005)
                assert relay.first_request_at is not None, f"no request; see {logs}"
                result["start_to_first_request_s"] = round(relay.first_request_at - started, 3)
                result["rss_at_first_request_mib"] = round(_mib(pusher.proc.pid), 1)
                idle: list[tuple[float, float]] = []
                deadline = time.monotonic() + args.idle_s
                while time.monotonic() < deadline:
                    idle.append((time.monotonic(), _mib(pusher.proc.pid)))
                    time.sleep(1.0)
                result["idle"] = _summary(idle)
                load: list[tuple[float, float]] = []
                with psycopg.connect(customer, autocommit=True) as conn:
                    conn.execute(SEED_ROUNDING)
                    deadline = time.monotonic() + args.duration
                    n = 0
                    while time.monotonic() < deadline:
                        assert pusher.proc.poll() is None, f"pusher exited; see {logs}"
                        written += conn.execute(
                            TICK_ROWS, {"devices": args.devices, "n": n}
                        ).rowcount
                        n += 1
                        load.append((time.monotonic(), _mib(pusher.proc.pid)))
                        time.sleep(max(0.0, 1.0 - (time.monotonic() - load[-1][0])))
                result["load"] = _summary(load)
                result["load"]["rows_written"] = written
                deadline = time.monotonic() + 120
                while time.monotonic() < deadline:
                    stored = scalar(central, "SELECT count(*) FROM fleet.power_measurements")
                    if stored >= written:
                        break
                    time.sleep(0.5)
                result["peak_rss_mib"] = round(pusher.peak_rss_mib(), 1)
            finally:
                pusher.stop()
        finally:
            ingestd.stop()
        stored = scalar(central, "SELECT count(*) FROM fleet.power_measurements")
        result["stored_centrally"] = stored
        result["loadavg_after"] = os.getloadavg()
    print(json.dumps(result, indent=2))
    finish("footprint", result, figures(result), args.json)
    return 0 if stored == written else 1


def figures(result: dict[str, Any]) -> list[Figure]:
    idle, load = result["idle"], result["load"]
    return [
        Figure.checked(
            "pusher start to first request",
            result["start_to_first_request_s"],
            f"{result['start_to_first_request_s']:.2f} s",
            TARGET_START,
            f"RSS then {result['rss_at_first_request_mib']:.0f} MiB",
        ),
        Figure.checked(
            "pusher idle RSS (median)",
            idle["median_mib"],
            f"{idle['median_mib']:.1f} MiB",
            TARGET_RSS,
            f"max {idle['max_mib']:.1f}",
        ),
        Figure.checked(
            f"pusher RSS, {result['devices']} meters at 1 sample/s (median)",
            load["median_mib"],
            f"{load['median_mib']:.1f} MiB",
            TARGET_RSS,
            f"first/last minute {load['first_minute_mib']:.1f}/{load['last_minute_mib']:.1f}",
        ),
        Figure.checked(
            "pusher RSS growth under load",
            load["slope_mib_per_10_min"],
            f"{load['slope_mib_per_10_min']:+.2f} MiB/10 min",
            TARGET_SLOPE,
            f"{load['samples']} s sampled",
            also=result["stored_centrally"] == load["rows_written"],
        ),
    ]


if __name__ == "__main__":
    sys.exit(main())
