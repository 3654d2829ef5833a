"""A meter stack and the services for the pusher's benches (catchup.py, footprint.py): the
statements that seed a customer database's sites, devices and measurements (meter-like values,
as registers report them), and ingestd and `pusher run` as child processes, stopped with
SIGTERM, with their peak RSS (VmHWM)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg

__all__ = [
    "SEED_DEVICES",
    "SEED_MEASUREMENTS",
    "SEED_ROUNDING",
    "SEED_SITES",
    "Child",
    "peak_rss_mib",
    "scalar",
    "start_ingestd",
]

SEED_SITES = """
INSERT INTO monitoring.sites (id, name, timezone)
SELECT s, 'Plant ' || s, 'Europe/Amsterdam' FROM generate_series(1, %(sites)s) AS s
"""
SEED_DEVICES = """
INSERT INTO monitoring.devices (id, site_id, serial_number, model, name)
SELECT d, (d - 1) %% %(sites)s + 1, 'AW21-' || lpad(d::text, 5, '0'), 'Acuvim IIR', 'Feeder ' || d
FROM generate_series(1, %(devices)s) AS d
"""

# Meter-like values: two decimals, as registers report them (random() alone gives 17 digits).
SEED_ROUNDING = """
CREATE FUNCTION pg_temp.r(base float8, spread float8) RETURNS float8 LANGUAGE sql AS
$$ SELECT round((base + random() * spread)::numeric, 2)::float8 $$
"""

# Row n is device n % devices + 1 at minute n / devices before now: a dense recent history.
SEED_MEASUREMENTS = """
INSERT INTO monitoring.power_measurements (
    device_id, time, received_at, v1, v2, v3, v12, v23, v31, i1, i2, i3, i_n, p1, p2, p3, p_total,
    q_total, s_total, pf_total, freq, energy_imp_kwh, energy_exp_kwh, energy_q_imp_kvarh,
    energy_q_exp_kvarh, thd_v, thd_i)
SELECT n %% %(devices)s + 1,
       date_trunc('minute', now()) - make_interval(mins => n / %(devices)s + 1),
       now(),
       pg_temp.r(229, 3), pg_temp.r(229, 3), pg_temp.r(229, 3),
       pg_temp.r(397, 4), pg_temp.r(397, 4), pg_temp.r(397, 4),
       pg_temp.r(10, 5), pg_temp.r(10, 5), pg_temp.r(10, 5), pg_temp.r(0, 1),
       pg_temp.r(2, 1), pg_temp.r(2, 1), pg_temp.r(2, 1), pg_temp.r(7, 2),
       pg_temp.r(1, 1), pg_temp.r(7, 2), pg_temp.r(0.9, 0.1), pg_temp.r(49.95, 0.1),
       round(100000 + n * 0.1, 1), round(n * 0.01, 2), round(5000 + n * 0.02, 2),
       round(n * 0.001, 3), pg_temp.r(1.5, 1), pg_temp.r(4, 2)
FROM generate_series(0, %(rows)s - 1) AS n
"""


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise LookupError("VmHWM missing")


def scalar(dsn: str, query: str) -> Any:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(query).fetchone()
        return row[0] if row else None


class Child:
    """A service subprocess (the venv's python -m <module>), stopped with SIGTERM."""

    def __init__(
        self, module: str, args: list[str], env: dict[str, str], log: Path, python: str = ""
    ) -> None:
        self.log = log.open("ab")
        self.proc = subprocess.Popen(
            [python or sys.executable, "-m", module, *args],
            env={**os.environ, **env},
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def peak_rss_mib(self) -> float:
        return peak_rss_mib(self.proc.pid)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def start_ingestd(central: str, port: int, log: Path) -> Child:
    env = {
        "INGESTD_DATABASE_URL": central,
        "INGESTD_HOST": "127.0.0.1",
        "INGESTD_PORT": str(port),
        "INGESTD_RATE_LIMIT_PER_S": "10000",
        "INGESTD_RATE_LIMIT_BURST": "10000",
        "INGESTD_LOG_FORMAT": "json",
        "INGESTD_TIMESCALEDB": "off",
    }
    child = Child("ingestd", ["serve"], env, log)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if child.proc.poll() is not None:
            break
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return child
        except OSError:
            time.sleep(0.1)
    child.stop()
    raise RuntimeError(f"ingestd did not listen on {port}; see {log}")
