"""Meter simulator: N sites x M devices writing plausible Acuvim readings into a meter stack.

    python -m fleetdev.simulator --database-url URL [--sites 2] [--devices 4] [--interval 5]
        [--offline-every 120 --offline-for 30]    go offline, buffer, then replay back-dated
        [--duration 60]                           stop after this many seconds
    python -m fleetdev.simulator --database-url URL --backlog 1000000 [--days 30]
                                                  write a large history fast, then exit

Readings follow a daily load curve with noise: phase voltages around 230 V, currents and power
following the curve, power factor 0.9 to 0.99, frequency around 50 Hz, energy registers that only
count up, across restarts too (each meter's load and registers follow from its id, and a restart
counts on from its latest stored sample). Going offline mimics meter firmware: samples are kept in the meter's buffer and written
later in one transaction, with their original `time` and a new `received_at` (a back-fill).
"""

from __future__ import annotations

import argparse
import math
import random
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

__all__ = ["REPLAYED_ROWS", "Meter", "MeterStack", "main", "replay_threshold", "write_backlog"]

VALUE_COLUMNS = (
    "v1", "v2", "v3", "v12", "v23", "v31", "i1", "i2", "i3", "i_n",
    "p1", "p2", "p3", "p_total", "q_total", "s_total", "pf_total", "freq",
    "energy_imp_kwh", "energy_exp_kwh", "energy_q_imp_kvarh", "energy_q_exp_kvarh", "thd_v", "thd_i",
)  # fmt: skip
INSERT_SAMPLE = (
    "INSERT INTO monitoring.power_measurements (device_id, time, "
    + ", ".join(VALUE_COLUMNS)
    + ") VALUES (%s, %s, "
    + ", ".join(["%s"] * len(VALUE_COLUMNS))
    + ") ON CONFLICT (device_id, time) DO NOTHING"
)
UPSERT_SITE = """
INSERT INTO monitoring.sites (id, name, timezone, address, updated_at) VALUES (%s, %s, %s, %s, now())
ON CONFLICT (id) DO NOTHING"""
# The registers of each meter's latest sample, so a restarted simulator counts on from them.
LAST_REGISTERS = """
SELECT DISTINCT ON (device_id) device_id,
       energy_imp_kwh, energy_exp_kwh, energy_q_imp_kvarh, energy_q_exp_kvarh
FROM monitoring.power_measurements WHERE device_id = ANY(%s) ORDER BY device_id, time DESC"""
UPSERT_DEVICE = """
INSERT INTO monitoring.devices (id, site_id, serial_number, model, name, updated_at)
VALUES (%s, %s, %s, %s, %s, now()) ON CONFLICT (id) DO NOTHING"""

# Rows written well after they were sampled: kept in a meter's buffer while offline, then replayed.
# A live row is written within the tick that sampled it; a replayed one at least one interval later,
# so half an interval tells them apart. `make dev`'s "(replayed N)" is this count, and it matches
# the sum of the simulator's own "replayed N" lines.
REPLAYED_ROWS = """
SELECT count(*) FROM monitoring.power_measurements WHERE received_at - time > %(threshold)s"""


def replay_threshold(interval_s: float) -> timedelta:
    """The delay past which a row counts as replayed, for readings every `interval_s`."""
    return timedelta(seconds=interval_s / 2)


# A whole history computed by the server: the fastest way to a backlog of millions of rows.
BACKLOG_SQL = """
INSERT INTO monitoring.power_measurements (device_id, time, {columns})
SELECT d.id, t,
       230 + 2 * sin(x), 229 + 2 * cos(x), 231 + 2 * sin(x + 1),
       398 + 3 * sin(x), 397 + 3 * cos(x), 399 + 3 * sin(x + 2),
       10 + 5 * sin(x / 7), 11 + 5 * sin(x / 7 + 1), 9 + 5 * sin(x / 7 + 2), 0.5 + abs(sin(x)),
       2.2 + sin(x / 7), 2.3 + sin(x / 7 + 1), 2.1 + sin(x / 7 + 2), 6.6 + 3 * sin(x / 7),
       1.2 + 0.3 * cos(x), 6.8 + 3 * sin(x / 7), 0.95 + 0.04 * sin(x), 50 + 0.02 * sin(x * 3),
       1000 + d.id * 17 + x * 0.11, 10 + x * 0.001, 200 + x * 0.02, 5 + x * 0.0001,
       2 + abs(sin(x)), 4 + abs(cos(x))
FROM monitoring.devices d,
     generate_series(%(start)s::timestamptz, %(stop)s::timestamptz, %(step)s::interval) AS t,
     LATERAL (SELECT extract(epoch FROM t) / 600.0 AS x) v
WHERE d.id = ANY(%(devices)s)
ON CONFLICT (device_id, time) DO NOTHING
"""


@dataclass
class Meter:
    """One simulated meter's state: its id and the energy registers that only count up."""

    device_id: int
    phase: float = 0.0
    base_kw: float = 0.0
    energy_imp_kwh: float = 0.0
    energy_exp_kwh: float = 0.0
    energy_q_imp_kvarh: float = 0.0
    energy_q_exp_kvarh: float = 0.0

    def __post_init__(self) -> None:
        # The same meter every run: its load and starting registers follow from its id.
        rng = random.Random(self.device_id)
        self.phase = rng.uniform(0, 2 * math.pi)
        self.base_kw = rng.uniform(5.0, 60.0)
        self.energy_imp_kwh = rng.uniform(1e3, 1e5)
        self.energy_exp_kwh = rng.uniform(0, 100)
        self.energy_q_imp_kvarh = rng.uniform(1e2, 1e4)

    def resume(self, registers: Sequence[float | None]) -> None:
        """Continue from the registers of the meter's latest stored sample (a restarted simulator
        must not look like a register reset: that would count the whole register as energy)."""
        imp, exp, q_imp, q_exp = registers
        self.energy_imp_kwh = self.energy_imp_kwh if imp is None else imp
        self.energy_exp_kwh = self.energy_exp_kwh if exp is None else exp
        self.energy_q_imp_kvarh = self.energy_q_imp_kvarh if q_imp is None else q_imp
        self.energy_q_exp_kvarh = self.energy_q_exp_kvarh if q_exp is None else q_exp

    def sample(self, when: datetime, interval_s: float) -> tuple[Any, ...]:
        """One reading at `when`: a daily load curve plus noise."""
        hour = when.hour + when.minute / 60
        load = 0.55 + 0.45 * math.sin((hour - 6) / 24 * 2 * math.pi + self.phase / 10)
        p_total = max(0.1, self.base_kw * load * random.uniform(0.95, 1.05))
        pf = random.uniform(0.90, 0.99)
        volts = [random.gauss(230, 1.5) for _ in range(3)]
        share = [random.uniform(0.3, 0.37) for _ in range(3)]
        total_share = sum(share)
        p = [p_total * s / total_share for s in share]
        amps = [pi * 1000 / (v * pf) for pi, v in zip(p, volts, strict=True)]
        s_total = p_total / pf
        q_total = math.sqrt(max(s_total**2 - p_total**2, 0.0))
        hours = interval_s / 3600
        self.energy_imp_kwh += p_total * hours
        self.energy_q_imp_kvarh += q_total * hours
        line = [v * math.sqrt(3) for v in volts]
        return (
            *volts, *line, *amps, abs(amps[0] - amps[1]) * 0.1,
            *p, p_total, q_total, s_total, pf, random.gauss(50.0, 0.02),
            self.energy_imp_kwh, self.energy_exp_kwh, self.energy_q_imp_kvarh, self.energy_q_exp_kvarh,
            random.uniform(1.5, 3.0), random.uniform(3.0, 8.0),
        )  # fmt: skip


@dataclass
class MeterStack:
    """The customer's meters: sites, devices and their buffered samples while offline."""

    database_url: str
    sites: int = 2
    devices_per_site: int = 4
    meters: list[Meter] = field(default_factory=list)
    buffer: list[tuple[Any, ...]] = field(default_factory=list)

    def install(self) -> None:
        """Create the sites and devices (if absent) and the meters that write for them, their
        registers counting on from the latest stored sample."""
        with psycopg.connect(self.database_url) as conn:
            for s in range(1, self.sites + 1):
                conn.execute(
                    UPSERT_SITE, (s, f"Plant {s}", "Europe/Amsterdam", f"Industrieweg {s}")
                )
                for d in range(1, self.devices_per_site + 1):
                    device_id = s * 100 + d
                    conn.execute(
                        UPSERT_DEVICE,
                        (device_id, s, f"AW21-{device_id:05d}", "Acuvim IIR", f"Feeder {s}.{d}"),
                    )
                    self.meters.append(Meter(device_id))
            ids = [m.device_id for m in self.meters]
            last = {row[0]: row[1:] for row in conn.execute(LAST_REGISTERS, (ids,))}
            for meter in self.meters:
                if meter.device_id in last:
                    meter.resume(last[meter.device_id])

    def tick(self, when: datetime, interval_s: float, online: bool) -> tuple[int, int]:
        """Take one reading per meter; write it (and any buffer) when online.

        Return (rows written, of which replayed): the replayed ones were sampled at earlier ticks.
        """
        earlier = len(self.buffer)
        self.buffer.extend((m.device_id, when, *m.sample(when, interval_s)) for m in self.meters)
        if not online:
            return 0, 0
        with psycopg.connect(self.database_url) as conn, conn.cursor() as cur:
            cur.executemany(INSERT_SAMPLE, self.buffer)  # kept in the buffer if this fails
        written = len(self.buffer)
        self.buffer = []
        return written, earlier


def write_backlog(
    database_url: str, rows: int, *, days: float = 30.0, sites: int = 2, devices_per_site: int = 4
) -> int:
    """Write about `rows` samples spread over the last `days`, server-side; return the count."""
    stack = MeterStack(database_url, sites, devices_per_site)
    stack.install()
    device_ids = [m.device_id for m in stack.meters]
    per_device = max(1, math.ceil(rows / len(device_ids)))
    stop = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1)
    step = timedelta(seconds=max(1.0, days * 86400 / per_device))
    start = stop - step * (per_device - 1)
    with psycopg.connect(database_url) as conn:
        cur = conn.execute(
            BACKLOG_SQL.format(columns=", ".join(VALUE_COLUMNS)),
            {"start": start, "stop": stop, "step": step, "devices": device_ids},
        )
        return cur.rowcount


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fleetdev.simulator", description=__doc__.split("\n")[0])
    parser.add_argument("--database-url", required=True, help="the meter stack's PostgreSQL URL")
    parser.add_argument("--sites", type=int, default=2)
    parser.add_argument("--devices", type=int, default=4, help="devices per site")
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between readings")
    parser.add_argument(
        "--offline-every", type=float, default=0.0, help="go offline every N s (0: never)"
    )
    parser.add_argument("--offline-for", type=float, default=30.0, help="stay offline this long")
    parser.add_argument(
        "--duration", type=float, default=0.0, help="stop after N s (0: until Ctrl-C)"
    )
    parser.add_argument(
        "--backlog", type=int, default=0, help="write this many rows of history and exit"
    )
    parser.add_argument("--days", type=float, default=30.0, help="history span for --backlog")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.backlog:
        started = time.monotonic()
        count = write_backlog(
            args.database_url,
            args.backlog,
            days=args.days,
            sites=args.sites,
            devices_per_site=args.devices,
        )
        print(f"wrote {count} rows in {time.monotonic() - started:.1f} s")
        return 0

    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    stack = MeterStack(args.database_url, args.sites, args.devices)
    stack.install()
    started = time.monotonic()
    next_at = started
    while not stopping and (not args.duration or time.monotonic() - started < args.duration):
        elapsed = time.monotonic() - started
        online = not (
            args.offline_every
            and elapsed % args.offline_every > args.offline_every - args.offline_for
        )
        try:
            _, replayed = stack.tick(datetime.now(UTC), args.interval, online)
        except psycopg.OperationalError as exc:
            print(f"simulator: meter stack unreachable ({exc}); buffering", file=sys.stderr)
            replayed = 0
        if replayed:
            print(f"simulator: back online, replayed {replayed} rows sampled offline", flush=True)
        next_at += args.interval
        time.sleep(max(0.0, next_at - time.monotonic()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
