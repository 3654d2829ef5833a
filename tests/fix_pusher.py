"""pusher fixtures: a migrated customer database per test, an in-process ingestd on a loopback
port, pusher settings pointing at both, and helpers to seed customer rows and to run the daemon."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import os
import sys
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import msgspec
import psycopg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from fleetdev.pgcluster import PgCluster, free_port
from ingestd.app import INGEST_PATH, SERVER_OPTIONS, create_app
from ingestd.settings import Settings as IngestdSettings
from prometheus_client.parser import text_string_to_metric_families
from pusher.daemon import Pusher, run
from pusher.migrate import apply_migrations
from pusher.ops.systemd import SystemdNotifier
from pusher.settings import Settings

BASE_TIME = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=6)

INSERT_SITE = """
INSERT INTO monitoring.sites (id, name, timezone, address) VALUES (%s, %s, 'Europe/Amsterdam', %s)
"""
INSERT_DEVICE = """
INSERT INTO monitoring.devices (id, site_id, serial_number, model, name)
VALUES (%s, %s, %s, 'Acuvim IIR', %s)
"""
# One sample per device per second from BASE_TIME + start seconds on, with plausible values.
INSERT_MEASUREMENTS = """
INSERT INTO monitoring.power_measurements
    (device_id, time, v1, v2, v3, i1, i2, i3, p_total, pf_total, freq, energy_imp_kwh)
SELECT d, %(base)s + make_interval(secs => s), 230.0 + d, 229.5, 231.2, 10.0 + s %% 7, 9.5, 10.1,
       7.2, 0.97, 50.0, 1000.0 + s
FROM generate_series(1, %(devices)s) AS d, generate_series(%(start)s, %(stop)s - 1) AS s
"""


def _recreate(cluster: PgCluster, name: str, template: str | None = None) -> str:
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        suffix = f' TEMPLATE "{template}"' if template else ""
        conn.execute(f'CREATE DATABASE "{name}"{suffix}')
    return cluster.dsn(name)


@pytest.fixture(scope="session")
def customer_template(pg_cluster: PgCluster) -> str:
    """A customer database with the pusher migrations applied once (template of each test's)."""
    dsn = _recreate(pg_cluster, "customer_template")
    apply_migrations(dsn)
    return dsn


@pytest.fixture
def customer_db(pg_cluster: PgCluster, customer_template: str) -> Iterator[str]:
    """A migrated customer database, new for this test."""
    name = f"customer_{os.getpid()}"
    yield _recreate(pg_cluster, name, "customer_template")


@pytest.fixture
async def ingestd_server(ingestd_settings: IngestdSettings) -> AsyncIterator[TestServer]:
    """A real ingestd on a loopback port of the test's event loop."""
    server = TestServer(create_app(ingestd_settings), host="127.0.0.1")
    await server.start_server(**SERVER_OPTIONS)
    try:
        yield server
    finally:
        await server.close()


def ingest_url(server: TestServer) -> str:
    return str(server.make_url(INGEST_PATH))


@pytest.fixture
def pusher_settings(customer_db: str, ingestd_server: TestServer, customer_token: str) -> Settings:
    """A pusher on the customer database, pushing to the in-process ingestd, with timings in
    milliseconds so retries and ticks happen within a test."""
    return Settings(
        database_url=customer_db,
        enabled=True,
        ingest_url=ingest_url(ingestd_server),
        token=customer_token,
        push_interval_s=0.2,
        batch_size=500,
        max_batches_per_tick=3,
        backoff_base_s=0.01,
        backoff_cap_s=0.2,
        retry_after_jitter_s=0.01,
        request_timeout_s=10.0,
        shutdown_deadline_s=5.0,
        blocking_txn_warn_s=1.0,
        log_format="json",
        backlog_count_interval_s=0.0,
    )


def seed_inventory(dsn: str, *, sites: int = 2, devices: int = 4) -> None:
    """Sites 1..sites and devices 1..devices spread over them."""
    with psycopg.connect(dsn) as conn:
        for site_id in range(1, sites + 1):
            conn.execute(INSERT_SITE, (site_id, f"Plant {site_id}", f"Street {site_id}"))
        for device_id in range(1, devices + 1):
            site_id = (device_id - 1) % sites + 1
            conn.execute(
                INSERT_DEVICE, (device_id, site_id, f"AW21-{device_id:04d}", f"Feeder {device_id}")
            )


def seed_measurements(dsn: str, *, devices: int = 4, start: int = 0, stop: int = 100) -> int:
    """Samples for devices 1..devices at seconds [start, stop) after BASE_TIME; returns rows."""
    with psycopg.connect(dsn) as conn:
        cur = conn.execute(
            INSERT_MEASUREMENTS,
            {"base": BASE_TIME, "devices": devices, "start": start, "stop": stop},
        )
        return cur.rowcount


def scalar(dsn: str, query: str, params: Any = None) -> Any:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(query, params).fetchone()
        return row[0] if row else None


async def wait_for(
    predicate: Callable[[], bool], *, timeout_s: float = 30.0, what: str = "condition"
) -> None:
    """Poll `predicate` (in a thread: it may query a database) until true or the deadline."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await asyncio.to_thread(predicate):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


def central_count(central_dsn: str, table: str = "power_measurements") -> int:
    return int(scalar(central_dsn, f"SELECT count(*) FROM fleet.{table}"))


@contextlib.asynccontextmanager
async def running_pusher(
    settings: Settings, notifier: SystemdNotifier | None = None
) -> AsyncIterator[asyncio.Task[Pusher | None]]:
    """Run the daemon for the body of the `async with`, then stop it and surface its errors."""
    stop = asyncio.Event()
    task = asyncio.create_task(run(settings, stop, notifier=notifier))
    try:
        yield task
    finally:
        stop.set()
        await asyncio.wait_for(task, settings.shutdown_deadline_s + 10)


def with_metrics(settings: Settings) -> Settings:
    """The same settings with the metrics listener on a free loopback port."""
    return replace(settings, metrics_port=free_port())


async def scrape(settings: Settings) -> str:
    """GET /metrics from a running pusher, as Prometheus would."""
    url = f"http://{settings.metrics_host}:{settings.metrics_port}/metrics"
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain")
        return await resp.text()


def metric(text: str, name: str, **labels: str) -> float:
    """The sum of the scraped samples named `name` whose labels include `labels`."""
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    )


@dataclass
class Fault:
    """One scripted answer: `status` with `headers` and a JSON `body`, for a batch type."""

    status: int
    batch_type: str = "measurements"
    headers: dict[str, str] = field(default_factory=dict)
    body: dict[str, Any] = field(default_factory=dict)


@dataclass
class Seen:
    """A request as the front received it, and what it answered."""

    at: float
    batch_type: str
    rows: int
    cursor: str | None
    status: int
    items: list[dict[str, Any]] = field(repr=False, default_factory=list)


class FaultFront:
    """A real HTTP server in front of ingestd: it answers scripted faults (in turn, per batch
    type) or by rule, and forwards everything else to the real ingestd. With `stall_request`
    set to n, the n-th measurements answer is held (after ingestd committed it) until
    `release` is set."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.faults: deque[Fault] = deque()
        self.refuse: Callable[[list[dict[str, Any]]], bool] | None = None
        self.seen: list[Seen] = []
        self.stall_request: int | None = None
        self.stalled = asyncio.Event()
        self.release = asyncio.Event()
        self.server: TestServer | None = None
        self._session: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return ingest_url(self.server)

    def statuses(self, batch_type: str = "measurements") -> list[int]:
        return [s.status for s in self.seen if s.batch_type == batch_type]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        assert self._session is not None
        body = await request.read()  # aiohttp has already undone Content-Encoding: gzip
        batch_type = request.headers.get("X-Batch-Type", "")
        items = msgspec.json.decode(body)["items"] if body else []
        seen = Seen(
            time.monotonic(), batch_type, len(items), request.headers.get("X-Push-Cursor"), 0, items
        )
        self.seen.append(seen)
        if self.faults and self.faults[0].batch_type == batch_type:
            fault = self.faults.popleft()
            seen.status = fault.status
            return web.json_response(fault.body, status=fault.status, headers=fault.headers)
        if batch_type == "measurements" and self.refuse is not None and self.refuse(items):
            seen.status = 413
            return web.json_response({"error": "payload_too_large", "max_bytes": 1}, status=413)
        headers = {k: v for k, v in request.headers.items() if k.lower().startswith("x-")}
        headers["Content-Type"] = request.headers.get("Content-Type", "")
        if "Content-Encoding" in request.headers:
            headers["Content-Encoding"] = request.headers["Content-Encoding"]
        wire = gzip.compress(body, 1) if "Content-Encoding" in headers else body
        async with self._session.post(self.upstream, data=wire, headers=headers) as upstream:
            seen.status = upstream.status
            answer = await upstream.read()
            measurement_requests = sum(1 for s in self.seen if s.batch_type == "measurements")
            if batch_type == "measurements" and measurement_requests == self.stall_request:
                # ingestd has committed the batch; the answer is held back from the pusher.
                self.stalled.set()
                await self.release.wait()
            return web.Response(
                body=answer,
                status=upstream.status,
                content_type="application/json",
                headers={k: v for k, v in upstream.headers.items() if k == "Retry-After"},
            )

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post(INGEST_PATH, self._handle)
        self._session = aiohttp.ClientSession()
        self.server = TestServer(app, host="127.0.0.1")
        await self.server.start_server()

    async def close(self) -> None:
        if self.server is not None:
            await self.server.close()
        if self._session is not None:
            await self._session.close()


@pytest.fixture
async def fault_front(ingestd_server: TestServer) -> AsyncIterator[FaultFront]:
    """A fault-injecting front forwarding to the test's ingestd."""
    front = FaultFront(ingest_url(ingestd_server))
    await front.start()
    try:
        yield front
    finally:
        await front.close()


def pusher_env(settings: Settings, **overrides: str) -> dict[str, str]:
    """The environment that makes `pusher` (the command) run with these settings."""
    env = dict(os.environ)
    env.update(
        PUSHER_PUSH_ENABLED="true",
        PUSHER_DATABASE_URL=settings.database_url,
        PUSHER_INGEST_URL=settings.ingest_url,
        PUSHER_TOKEN=settings.token,
        PUSHER_PUSH_INTERVAL_S=str(settings.push_interval_s),
        PUSHER_BATCH_SIZE=str(settings.batch_size),
        PUSHER_BACKOFF_BASE_S=str(settings.backoff_base_s),
        PUSHER_BACKOFF_CAP_S=str(settings.backoff_cap_s),
        PUSHER_RETRY_AFTER_JITTER_S=str(settings.retry_after_jitter_s),
        PUSHER_SHUTDOWN_DEADLINE_S=str(settings.shutdown_deadline_s),
        PUSHER_LOG_FORMAT="json",
        PUSHER_METRICS_PORT=str(settings.metrics_port),
        PUSHER_BACKLOG_COUNT_INTERVAL_S=str(settings.backlog_count_interval_s),
    )
    env.update(overrides)
    return env


async def start_pusher_process(
    env: dict[str, str], *args: str, capture: bool = False
) -> asyncio.subprocess.Process:
    """`python -m pusher run` (or other args) as a child process; its output goes to the test's
    own stdout (pytest captures it at the file-descriptor level and shows it on failure),
    or to a pipe with `capture` (for commands whose output is read)."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pusher",
        *(args or ("run",)),
        env=env,
        stdout=asyncio.subprocess.PIPE if capture else None,
        stderr=asyncio.subprocess.STDOUT if capture else None,
    )
