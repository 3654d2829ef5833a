"""pusher fixtures: settings on the test's customer database pushing to the test's in-process
ingestd, the daemon run in-process or as the `pusher` command, and its metrics scraped."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator
from dataclasses import replace

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from fleetdev.pgcluster import free_port
from fleetservice import configure_logging
from prometheus_client.parser import text_string_to_metric_families
from pusher.daemon import Pusher, run
from pusher.ops.systemd import SystemdNotifier
from pusher.settings import Settings

from tests.fix_ingestd import ingest_url


@pytest.fixture
def pusher_settings(customer_db: str, ingestd_server: TestServer, customer_token: str) -> Settings:
    """A pusher on the customer database, pushing to the in-process ingestd, with timings in
    milliseconds so retries and ticks happen within a test; reconciliation off (its own tests
    turn it on), so its requests do not mix with what other tests count."""
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
        reconcile_interval_s=0.0,
    )


@pytest.fixture
def pusher_logs() -> None:
    """Log lines as `pusher run` writes them: JSON on stdout. The CLI configures that; a daemon
    run in-process inherits whatever the last command run in this process configured (an
    ingestd command logs to stderr), so tests that read its lines ask for this first."""
    configure_logging("json", "info", service="pusher")


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
        PUSHER_RECONCILE_INTERVAL_S=str(settings.reconcile_interval_s),
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
