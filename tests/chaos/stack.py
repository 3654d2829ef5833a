"""The pieces a chaos scenario is built from: real daemons as child processes, meters writing
into the customer database from threads (long transactions included), and the drain-and-check
step that ends every scenario.

    with ChaosStack.create(tmp_path) as stack:      # own central + customer PostgreSQL
        stack.start_ingestd(); stack.start_pusher(); stack.writers.start()
        ... inject faults ...
        report = stack.drain_and_check("scenario name")   # asserts 0 lost, 0 duplicated

Every process, thread, cluster and proxy it starts is stopped on exit, failure or not.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Self

import psycopg
from fleetcore.protocol import INGEST_PATH
from fleetdev.pgcluster import PgCluster, free_port, temporary_cluster
from fleetdev.simulator import INSERT_SAMPLE, MeterStack
from ingestd.customers import add_customer

from tests.chaos.checker import CheckReport, check, newest_key
from tests.chaos.faultproxy import FaultProxy, ThreadedLoop
from tests.chaos.figures import FIGURES
from tests.fix_faults import FaultFront

__all__ = [
    "ChaosStack",
    "Daemon",
    "MeterWriters",
    "migrate_central_database",
    "migrated_clusters",
    "pusher_daemon",
]

CUSTOMER_CODE = "CHAOS01"

# Short timings so that retries, backoffs and ticks happen many times within a scenario.
PUSHER_TIMINGS = {
    "PUSHER_PUSH_INTERVAL_S": "0.2",
    "PUSHER_BACKOFF_BASE_S": "0.05",
    "PUSHER_BACKOFF_CAP_S": "0.5",
    "PUSHER_RETRY_AFTER_JITTER_S": "0.05",
    "PUSHER_REQUEST_TIMEOUT_S": "2",
    "PUSHER_SHUTDOWN_DEADLINE_S": "2",
    "PUSHER_BATCH_SIZE": "200",
    "PUSHER_BACKLOG_COUNT_INTERVAL_S": "1",
}
INGESTD_TIMINGS = {
    "INGESTD_POOL_TIMEOUT_S": "1",
    "INGESTD_RETRY_AFTER_S": "1",
    "INGESTD_CONNECT_TIMEOUT_S": "5",
    "INGESTD_BODY_TIMEOUT_S": "5",
    "INGESTD_HOUSEKEEPING_INTERVAL_S": "3600",
}


def _base_env() -> dict[str, str]:
    return {
        k: v for k, v in os.environ.items() if not k.startswith(("INGESTD_", "PUSHER_", "FLEET_"))
    }


class Daemon:
    """A service as a child process (`python -m <module> <args>`), all its output in a log file
    that survives restarts, so a test can read (and scan) everything it ever printed."""

    def __init__(self, name: str, module_args: list[str], env: dict[str, str], log: Path) -> None:
        self.name = name
        self.args = [sys.executable, "-m", *module_args]
        self.env = env
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                self.args, env=self.env, stdout=out, stderr=subprocess.STDOUT
            )
        self.starts += 1

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def kill(self) -> None:
        """SIGKILL: no cleanup, no flush, no goodbye."""
        if self.alive:
            assert self.proc is not None
            self.proc.kill()
            self.proc.wait(timeout=10)

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM, then SIGKILL if it does not exit within `timeout`; return the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        return self.proc.returncode

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def json_lines(self) -> list[dict[str, Any]]:
        lines = []
        for line in self.output().splitlines():
            with contextlib.suppress(ValueError):
                parsed = json.loads(line)
                if isinstance(parsed, dict):
                    lines.append(parsed)
        return lines

    def rss_kb(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def open_fds(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))


def pusher_daemon(log: Path, customer_dsn: str, url: str, token: str, **env: str) -> Daemon:
    """`python -m pusher run` for one gateway, with the scenario timings (not started)."""
    full_env = {
        **_base_env(),
        **PUSHER_TIMINGS,
        "PUSHER_PUSH_ENABLED": "true",
        "PUSHER_DATABASE_URL": customer_dsn,
        "PUSHER_INGEST_URL": url,
        "PUSHER_TOKEN": token,
        "PUSHER_LOG_FORMAT": "json",
        **env,
    }
    return Daemon("pusher", ["pusher", "run"], full_env, log)


def wait_http(url: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(url, timeout=1) as resp,  # noqa: S310 - loopback
        ):
            if resp.status == 200:
                return
        time.sleep(0.05)
    raise AssertionError(f"{url} did not answer 200 within {timeout_s} s")


class MeterWriters:
    """Meters writing into the customer database from `threads` threads, each owning some
    devices: a transaction per round with one sample per device, now and then held open for up
    to `long_txn_s` (a long transaction the cursor must wait for) or rolled back. The customer
    database may vanish under them: they reconnect and go on. `offset` shifts every sample time
    (a gateway clock far ahead or behind)."""

    def __init__(
        self,
        dsn: str,
        *,
        sites: int = 2,
        devices_per_site: int = 3,
        threads: int = 3,
        period_s: float = 0.05,
        long_txn_s: float = 1.0,
        offset: timedelta = timedelta(0),
        seed: int = 1,
    ) -> None:
        self.dsn = dsn
        stack = MeterStack(dsn, sites, devices_per_site)
        stack.install()
        self.meters = stack.meters
        self.threads = threads
        self.period_s = period_s
        self.long_txn_s = long_txn_s
        self.offset = offset
        self.seed = seed
        self.committed_batches = 0
        self.errors = 0
        self._stop = threading.Event()
        self._workers: list[threading.Thread] = []

    def start(self) -> None:
        self._stop.clear()
        for n in range(self.threads):
            meters = self.meters[n :: self.threads]
            worker = threading.Thread(
                target=self._write, args=(meters, random.Random(self.seed * 100 + n)), daemon=True
            )
            worker.start()
            self._workers.append(worker)

    def stop(self) -> None:
        self._stop.set()
        for worker in self._workers:
            worker.join(timeout=30)
        self._workers = []

    def _write(self, meters: list[Any], rng: random.Random) -> None:
        conn: psycopg.Connection[Any] | None = None
        while not self._stop.is_set():
            try:
                if conn is None or conn.closed:
                    conn = psycopg.connect(self.dsn, connect_timeout=2)
                with conn.transaction() as txn, conn.cursor() as cur:
                    for meter in meters:
                        when = datetime.now(UTC) + self.offset
                        cur.execute(INSERT_SAMPLE, (meter.device_id, when, *meter.sample(when, 1)))
                    draw = rng.random()
                    if draw < 0.05:
                        self._stop.wait(rng.uniform(0.2, self.long_txn_s))
                    elif draw < 0.08:
                        raise psycopg.Rollback(txn)
                self.committed_batches += 1
            except psycopg.Error:
                self.errors += 1
                if conn is not None:
                    with contextlib.suppress(Exception):
                        conn.close()
                conn = None
                self._stop.wait(0.2)
                continue
            self._stop.wait(self.period_s)
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()


def migrate_central_database(dsn: str) -> None:
    """What `ingestd migrate` does, on plain partitions unless FLEET_TEST_TIMESCALEDB says so."""
    from ingestd.migrate import apply_migrations
    from ingestd.storage import StoragePlan, bootstrap_database

    apply_migrations(dsn)
    plan = StoragePlan(timescaledb=os.environ.get("FLEET_TEST_TIMESCALEDB", "off"))
    asyncio.run(bootstrap_database(dsn, plan))


@contextlib.contextmanager
def migrated_clusters(tmp: Path) -> Iterator[tuple[PgCluster, str, PgCluster, str]]:
    """A central and a customer PostgreSQL of the scenario's own (it may stop them), migrated.
    synchronous_commit is on: a commit acknowledged before an immediate stop survives it."""
    from pusher.migrate import apply_migrations as migrate_customer

    with (
        temporary_cluster(prefix="fleet-chaos-central-", synchronous_commit="on") as central,
        temporary_cluster(prefix="fleet-chaos-customer-", synchronous_commit="on") as customer,
    ):
        central_dsn = central.create_database("fleet")
        # Plain partitions unless asked: these clusters do not preload the TimescaleDB library.
        migrate_central_database(central_dsn)
        customer_dsn = customer.create_database("meters")
        migrate_customer(customer_dsn)
        yield central, central_dsn, customer, customer_dsn


@dataclass
class ChaosStack:
    """One gateway (customer database, meters, pusher) and one centre (database, ingestd),
    optionally with a fault proxy (`add_proxy`) and an HTTP fault front (`add_front`) between
    them."""

    tmp: Path
    central: PgCluster
    central_dsn: str
    customer: PgCluster
    customer_dsn: str
    token: str
    loop: ThreadedLoop
    ingest_port: int = field(default_factory=free_port)
    ingestd: Daemon | None = None
    pusher: Daemon | None = None
    proxy: FaultProxy | None = None
    front: FaultFront | None = None
    writers: MeterWriters | None = None
    stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)

    @classmethod
    @contextlib.contextmanager
    def create(cls, tmp: Path) -> Iterator[ChaosStack]:
        with contextlib.ExitStack() as outer:
            central, central_dsn, customer, customer_dsn = outer.enter_context(
                migrated_clusters(tmp)
            )
            token = add_customer(central_dsn, CUSTOMER_CODE, "Chaos customer")
            loop = outer.enter_context(ThreadedLoop())
            stack = cls(tmp, central, central_dsn, customer, customer_dsn, token, loop)
            try:
                yield stack
            finally:
                stack.close()

    @classmethod
    @contextlib.contextmanager
    def around(
        cls, tmp: Path, central: PgCluster, central_dsn: str, customer: PgCluster, customer_dsn: str
    ) -> Iterator[ChaosStack]:
        """A stack on clusters the caller made (a replicated centre, a small volume...): both
        databases already migrated; the customer is registered here."""
        token = add_customer(central_dsn, CUSTOMER_CODE, "Chaos customer")
        with ThreadedLoop() as loop:
            stack = cls(tmp, central, central_dsn, customer, customer_dsn, token, loop)
            try:
                yield stack
            finally:
                stack.close()

    def close(self) -> None:
        if self.writers is not None:
            self.writers.stop()
        for daemon in (self.pusher, self.ingestd):
            if daemon is not None:
                daemon.stop(timeout=5)
        for server in (self.front, self.proxy):
            if server is not None:
                with contextlib.suppress(Exception):
                    self.loop.run(server.close())
        self.stack.close()

    @property
    def ingestd_url(self) -> str:
        return f"http://127.0.0.1:{self.ingest_port}"

    def start_ingestd(self, **env: str) -> Daemon:
        full_env = {
            **_base_env(),
            **INGESTD_TIMINGS,
            "INGESTD_DATABASE_URL": self.central_dsn,
            "INGESTD_PORT": str(self.ingest_port),
            "INGESTD_LOG_FORMAT": "json",
            **env,
        }
        self.ingestd = Daemon("ingestd", ["ingestd", "serve"], full_env, self.tmp / "ingestd.log")
        self.ingestd.start()
        wait_http(self.ingestd_url + "/readyz")
        return self.ingestd

    def restart_ingestd(self) -> None:
        assert self.ingestd is not None
        self.ingestd.kill()
        self.ingestd.start()
        wait_http(self.ingestd_url + "/healthz")

    def add_proxy(self) -> FaultProxy:
        self.proxy = FaultProxy(self.ingest_port, seed=7)
        self.loop.run(self.proxy.start())
        return self.proxy

    def add_front(self) -> FaultFront:
        """The HTTP fault front (tests/fix_faults.py) before the proxy if there is one, else
        before ingestd; the pusher started after it pushes to it."""
        upstream = self.proxy.url if self.proxy else self.ingestd_url
        self.front = FaultFront(upstream + INGEST_PATH)
        self.loop.run(self.front.start())
        return self.front

    def start_pusher(self, url: str | None = None, **env: str) -> Daemon:
        nearest = self.front or self.proxy
        self.pusher = pusher_daemon(
            self.tmp / "pusher.log",
            self.customer_dsn,
            url or (nearest.url if nearest else self.ingestd_url),
            self.token,
            **env,
        )
        self.pusher.start()
        return self.pusher

    def start_writers(self, **kwargs: Any) -> MeterWriters:
        self.writers = MeterWriters(self.customer_dsn, **kwargs)
        self.writers.start()
        return self.writers

    def pusher_5xx(self) -> int:
        """Answers of 5xx the pusher saw (from its own log lines)."""
        assert self.pusher is not None
        return sum(
            1
            for line in self.pusher.json_lines()
            if isinstance(line.get("status"), int) and line["status"] >= 500
        )

    def check(self) -> CheckReport:
        """One comparison; the central database may be between primaries: retry a moment."""
        for _ in range(20):
            try:
                return check(self.customer_dsn, self.central_dsn, CUSTOMER_CODE)
            except psycopg.OperationalError:
                time.sleep(0.5)
        return check(self.customer_dsn, self.central_dsn, CUSTOMER_CODE)

    def drain(self, name: str, timeout_s: float = 90.0) -> CheckReport:
        """Stop the meters, make sure both daemons run, and wait until every committed row is
        accounted for centrally, or until the newest one is: the pusher ships in cursor order,
        so whatever is missing then is lost for good. Adds the outcome to the figures."""
        if self.writers is not None:
            self.writers.stop()
        if self.proxy is not None:
            self.proxy.clear()
        for daemon in (self.ingestd, self.pusher):
            if daemon is not None and not daemon.alive:
                daemon.start()
        newest = newest_key(self.customer_dsn)
        deadline = time.monotonic() + timeout_s
        report = self.check()
        while report.lost and newest in report.lost_keys and time.monotonic() < deadline:
            time.sleep(0.5)
            report = self.check()
        FIGURES.scenarios += 1
        FIGURES.rows_committed += report.committed
        FIGURES.rows_arrived += report.arrived
        FIGURES.rows_dead_lettered += report.total("dead_lettered")
        FIGURES.rows_quarantined += report.total("quarantined")
        FIGURES.rows_lost += report.lost
        FIGURES.rows_duplicated += report.duplicated
        FIGURES.duplicate_deliveries += report.duplicate_deliveries
        FIGURES.dead_letter_redeliveries += report.dead_letter_redeliveries
        if self.pusher is not None:
            FIGURES.scenario_5xx += self.pusher_5xx()
        print(f"[{name}] {report.summary()}")
        return report

    def drain_and_check(self, name: str, timeout_s: float = 90.0) -> CheckReport:
        """`drain`, then assert 0 lost, 0 duplicated, 0 extra."""
        report = self.drain(name, timeout_s)
        assert report.committed > 0, "the meters wrote nothing"
        assert report.lost == 0, f"[{name}] rows lost: {report.summary()}"
        assert report.duplicated == 0, f"[{name}] rows duplicated: {report.summary()}"
        assert report.extra == 0, f"[{name}] rows never committed arrived: {report.summary()}"
        return report

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
