"""Soak: several gateways pushing steadily for FLEET_SOAK_S seconds (default 120) with faults
sprinkled in; both daemons' memory and file descriptors stay flat, the central connections
stay within the pool, the lag stays bounded, and nothing is lost or doubled.

FLEET_SOAK_GATEWAYS sets the number of gateways (default 4; each is a pusher process with its
own customer database and meters); `make soak-long` runs 30 minutes. The faults: a TCP proxy
resetting answers now and then, foreign answers from a hostile front (those a review found
harmful), one pusher SIGKILLed halfway and, with FLEET_SOAK_CENTRAL_STOPS (default 1), the
central PostgreSQL stopped hard and restarted (ingestd stays up and answers 503 meanwhile)."""

from __future__ import annotations

import os
import random
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from ingestd.customers import add_customer
from pusher.migrate import apply_migrations

from tests.chaos.checker import check
from tests.chaos.faultproxy import NetFault
from tests.chaos.figures import FIGURES
from tests.chaos.hostile_answers import REVIEWED
from tests.chaos.stack import ChaosStack, Daemon, MeterWriters, pusher_daemon

SOAK_S = float(os.environ.get("FLEET_SOAK_S", "120"))
GATEWAYS = int(os.environ.get("FLEET_SOAK_GATEWAYS", "4"))
CENTRAL_STOPS = int(os.environ.get("FLEET_SOAK_CENTRAL_STOPS", "1"))
POOL_MAX = 4
CENTRAL_COUNT = "SELECT count(*) FROM fleet.power_measurements WHERE customer_id = (SELECT id FROM fleet.customers WHERE code = %s)"
INGESTD_BACKENDS = "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'ingestd'"


@dataclass
class Gateway:
    code: str
    dsn: str
    pusher: Daemon
    writers: MeterWriters


@dataclass
class Sample:
    at: float
    ingestd_rss_kb: int
    ingestd_fds: int
    pusher_rss_kb: list[int]
    pusher_fds: list[int]
    central_backends: int
    behind: list[int]


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[ChaosStack]:
    """The soak's own clusters: the gateways' databases all live in the customer cluster."""
    with ChaosStack.create(tmp_path) as chaos:
        yield chaos


def _behind(gateway: Gateway, central_dsn: str) -> int:
    with psycopg.connect(gateway.dsn, autocommit=True) as conn:
        local = conn.execute("SELECT count(*) FROM monitoring.power_measurements").fetchone()
    with psycopg.connect(central_dsn, autocommit=True) as conn:
        central = conn.execute(CENTRAL_COUNT, (gateway.code,)).fetchone()
    return int(local[0]) - int(central[0])  # type: ignore[index]


def _flat(values: list[int], slack: float, absolute: int) -> bool:
    """The last third's median is within `slack` times (plus `absolute`) of the first third's."""
    third = max(1, len(values) // 3)
    early, late = statistics.median(values[:third]), statistics.median(values[-third:])
    return late <= early * slack + absolute


@pytest.mark.long
@pytest.mark.timeout(SOAK_S + 900)
def test_soak_many_gateways(stack: ChaosStack) -> None:
    """GATEWAYS pushers push for FLEET_SOAK_S through a proxy that now and then resets answers,
    one pusher is SIGKILLed halfway; memory and fds of ingestd and the pushers stay flat,
    ingestd holds at most its pool of central connections, the backlog stays bounded, and
    after a drain every gateway's rows are stored exactly once."""
    rng = random.Random(int(time.time()))
    stack.start_ingestd(INGESTD_POOL_MAX_SIZE=str(POOL_MAX))
    proxy = stack.add_proxy()
    front = stack.add_front()
    stops_at = [SOAK_S * (n + 1) / (CENTRAL_STOPS + 1) for n in range(CENTRAL_STOPS)]
    gateways: list[Gateway] = []
    try:
        for n in range(GATEWAYS):
            code = f"SOAK{n:02d}"
            dsn = stack.customer.create_database(f"gateway{n}")
            apply_migrations(dsn)
            token = add_customer(stack.central_dsn, code)
            writers = MeterWriters(dsn, threads=2, period_s=0.1, seed=n + 1)
            pusher = pusher_daemon(stack.tmp / f"pusher{n}.log", dsn, front.url, token)
            gateways.append(Gateway(code, dsn, pusher, writers))
        for g in gateways:
            g.writers.start()
            g.pusher.start()
        assert stack.ingestd is not None
        samples: list[Sample] = []
        started = time.monotonic()
        killed = False
        while time.monotonic() - started < SOAK_S and len(samples) < 10_000:
            time.sleep(min(5.0, SOAK_S / 20))
            if rng.random() < 0.3:
                proxy.set(NetFault.RESET_RESPONSE, probability=0.2, count=3)
            if rng.random() < 0.3:
                front.plan(*rng.sample(REVIEWED, 3))
            if stops_at and time.monotonic() - started > stops_at[0]:
                stops_at.pop(0)
                stack.central.stop("immediate")
                FIGURES.fault("central_pg_immediate_stop")
                time.sleep(rng.uniform(0.5, 2.0))
                stack.central.start()
            if not killed and time.monotonic() - started > SOAK_S / 2:
                gateways[0].pusher.kill()
                FIGURES.fault("pusher_sigkill")
                gateways[0].pusher.start()
                killed = True
            with psycopg.connect(stack.central_dsn, autocommit=True) as conn:
                backends = int(conn.execute(INGESTD_BACKENDS).fetchone()[0])  # type: ignore[index]
            samples.append(
                Sample(
                    time.monotonic() - started,
                    stack.ingestd.rss_kb(),
                    stack.ingestd.open_fds(),
                    [g.pusher.rss_kb() for g in gateways],
                    [g.pusher.open_fds() for g in gateways],
                    backends,
                    [_behind(g, stack.central_dsn) for g in gateways],
                )
            )
        FIGURES.fault("reset_response", proxy.stats.by_fault.get("reset_response", 0))
        foreign = sum(1 for r in front.requests if r.answer != "forwarded")
        FIGURES.fault("hostile_answer", foreign)
        proxy.clear()
        front.planned.clear()
        for g in gateways:
            g.writers.stop()
        first, last = samples[0], samples[-1]
        print(
            f"soak {SOAK_S:.0f}s x {GATEWAYS} gateways, {len(samples)} samples: ingestd RSS "
            f"{first.ingestd_rss_kb}->{last.ingestd_rss_kb} kB, fds {first.ingestd_fds}->"
            f"{last.ingestd_fds}; pusher RSS {first.pusher_rss_kb}->{last.pusher_rss_kb} kB; "
            f"central backends max {max(s.central_backends for s in samples)}; "
            f"max behind {max(max(s.behind) for s in samples)} rows; foreign answers {foreign}"
        )
        FIGURES.notes.append(
            f"soak {SOAK_S:.0f}s x {GATEWAYS} gateways: ingestd RSS {first.ingestd_rss_kb}->"
            f"{last.ingestd_rss_kb} kB, fds {first.ingestd_fds}->{last.ingestd_fds}; pushers' "
            f"RSS max {max(last.pusher_rss_kb)} kB; central backends max "
            f"{max(s.central_backends for s in samples)}; foreign answers {foreign}"
        )
        assert _flat([s.ingestd_rss_kb for s in samples], 1.3, 20_000), "ingestd memory grows"
        for i in range(1, GATEWAYS):  # gateway 0 restarted halfway: its process is new
            assert _flat([s.pusher_rss_kb[i] for s in samples], 1.3, 10_000), "pusher memory"
            fds = [s.pusher_fds[i] for s in samples]
            assert max(fds) - min(fds) <= 8, f"pusher fds {fds}"
        fds = [s.ingestd_fds for s in samples]
        assert max(fds[len(fds) // 3 :]) <= max(fds[: len(fds) // 3]) + 8, f"ingestd fds {fds}"
        assert max(s.central_backends for s in samples) <= POOL_MAX
        written_per_s = max(1, sum(len(g.writers.meters) for g in gateways) // 2 * 10)
        assert max(max(s.behind) for s in samples) <= written_per_s * 15, "lag unbounded"
        deadline = time.monotonic() + 90
        for g in gateways:
            report = check(g.dsn, stack.central_dsn, g.code)
            while report.lost and time.monotonic() < deadline:
                time.sleep(0.5)
                report = check(g.dsn, stack.central_dsn, g.code)
            FIGURES.scenarios += 1
            FIGURES.rows_committed += report.committed
            FIGURES.rows_arrived += report.arrived
            FIGURES.rows_lost += report.lost
            FIGURES.rows_duplicated += report.duplicated
            FIGURES.duplicate_deliveries += report.duplicate_deliveries
            print(f"[soak {g.code}] {report.summary()}")
            assert report.committed > 0
            assert (report.lost, report.duplicated, report.extra) == (0, 0, 0), report.summary()
    finally:
        for g in gateways:
            g.writers.stop()
            g.pusher.stop(timeout=5)
