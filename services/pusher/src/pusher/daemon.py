"""The push loop: sites, devices, then measurement batches, each resource on its own schedule.

Every resource has a due time. A tick (every `push_interval_s`) makes all three due, in the
protocol's order. A full measurement batch makes measurements due again at once, so a backlog
drains back to back at the ingest rate instead of N batches per interval; while one batch is on
the wire the next is already read and compressed (`readahead.py`); each resource's batches are
sent by `shipping.py`. A failure makes only its resource wait (per-resource backoff,
`retry.py`); what each answer changes in the push state, the metrics and the log is kept by
`outcomes.py`, a restored customer database is repaired once per tick by `state/recovery.py`,
and the centre hears how this gateway is doing from `ops/health.py`. Between pushes a
reconciliation pass runs when due (`reconcile/schedule.py`: at start, hourly, soon after the
central database changed). The stop event is checked between batches; `run` gives an in-flight
batch until the shutdown deadline and then cancels it, which abandons the batch without
advancing the cursor.

Progress is kept in Prometheus metrics (`ops/metrics.py`), served when PUSHER_METRICS_PORT is set,
and told to systemd when run under it (`ops/systemd.py`): READY=1 once the customer database is
reached, STATUS= each tick, WATCHDOG=1 from the loop itself, STOPPING=1 on shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from typing import Any

import psycopg
import structlog
from fleetcore.protocol import BatchType
from fleetservice.commands import one_line

from pusher import source
from pusher.delivery import IngestClient
from pusher.delivery.answers import printable
from pusher.delivery.uploadcap import UploadCap
from pusher.errors import SourceError
from pusher.ops.health import HealthReporter
from pusher.ops.metrics import PusherMetrics
from pusher.ops.progress import PushProgress
from pusher.ops.scrape import serve_metrics
from pusher.ops.systemd import SystemdNotifier
from pusher.outcomes import Outcomes
from pusher.readahead import ReadAhead
from pusher.reconcile import ReconcileMetrics, Reconciler
from pusher.retry import RetryEvent, RetryPolicy
from pusher.settings import Settings
from pusher.shipping import Shipper
from pusher.source import BlockingTransaction
from pusher.state import PushState
from pusher.state.recovery import recover_restored_database

__all__ = ["Pusher", "run"]

log = structlog.get_logger("pusher")


class Pusher:
    """State of one running daemon: per-resource schedule, the push state, its metrics, and
    what it tells systemd."""

    def __init__(
        self,
        settings: Settings,
        rng: random.Random | None = None,
        notifier: SystemdNotifier | None = None,
    ) -> None:
        self.settings = settings
        self.rng = rng or random.Random()
        self.metrics = PusherMetrics()
        self.notifier = notifier or SystemdNotifier(None)
        self.state = PushState()
        self.due: dict[BatchType, float] = {}
        self.blocker: BlockingTransaction | None = None
        self._next_tick = 0.0
        self._db_failures = 0
        self.progress = PushProgress(self.metrics, settings.backlog_count_interval_s)
        self.policy = RetryPolicy.from_settings(settings, self.rng)
        self.outcomes = Outcomes(settings, self.state, self.metrics, self.progress, self.policy)
        self.shipper = Shipper(settings, self.state, self.metrics, self.progress, self.outcomes)
        self.health = HealthReporter(settings)
        self.reconciler = Reconciler(settings, ReconcileMetrics(self.metrics.registry), self.policy)

    async def loop(self, stop: asyncio.Event) -> None:
        """Run until `stop` is set; reconnect to the customer database when it goes away."""
        s = self.settings
        async with IngestClient(
            s.ingest_url,
            s.token,
            timeout_s=s.request_timeout_s,
            ca_bundle=s.ca_bundle,
            gzip_level=s.gzip_level,
            wire_format=s.wire_format,
            upload_cap=UploadCap(s.max_upload_bytes_per_s) if s.max_upload_bytes_per_s else None,
        ) as client:
            self.metrics.upload_cap.set(s.max_upload_bytes_per_s)
            read_ahead = ReadAhead(s.gzip_level, source.columnar_encoder(s.columnar_encoder))
            while not stop.is_set():
                try:
                    conn = await source.connect(
                        s.database_url, statement_timeout_s=s.db_statement_timeout_s
                    )
                    async with conn:
                        try:
                            await self._session(conn, client, read_ahead, stop)
                        finally:
                            await read_ahead.close()
                except SourceError:
                    raise  # not migrated: a configuration error, `pusher run` exits saying so
                except psycopg.OperationalError as exc:
                    self._db_failures += 1
                    delay = self.policy.delay(RetryEvent.DATABASE_LOST, self._db_failures)
                    log.error(
                        "customer_database_unavailable",
                        error=one_line(exc),
                        retry_in_s=round(delay, 3),
                    )
                    self.metrics.database_errors.inc()
                    self.notifier.status(f"customer database unavailable; retrying in {delay:.0f}s")
                    await self.notifier.idle(stop, time.monotonic() + delay)
                except Exception as exc:  # the daemon outlives any one tick, whatever it met
                    await self._unexpected(exc, stop)

    async def _unexpected(self, exc: Exception, stop: asyncio.Event) -> None:
        """An error nothing expected ended the tick: log it with its cause and traceback,
        count it, and start over (state reloaded, cursor as stored) after the backoff cap."""
        delay = self.policy.delay(RetryEvent.UNEXPECTED, 1)
        self.metrics.unexpected_errors.inc()
        log.error(
            "tick_failed",
            hint="unexpected error in a push tick: retrying at the backoff cap, cursor kept",
            error=f"{type(exc).__name__}: {printable(str(exc))}",
            retry_in_s=delay,
            exc_info=exc,
        )
        self.notifier.status(
            f"unexpected error ({type(exc).__name__}); retrying in {delay:.0f}s, cursor kept"
        )
        await self.notifier.idle(stop, time.monotonic() + delay)

    async def _session(
        self,
        conn: psycopg.AsyncConnection[Any],
        client: IngestClient,
        read_ahead: ReadAhead,
        stop: asyncio.Event,
    ) -> None:
        s = self.settings
        await self.state.load(conn, s.batch_size)
        client.negotiation.remember(self.state[BatchType.MEASUREMENTS].media_type)
        self._db_failures = 0
        now = time.monotonic()
        self._next_tick = now
        self.due = dict.fromkeys(BatchType, now)
        self.progress.restore(self.state)
        await self.reconciler.start_session(conn)
        log.info("connected", cursor=str(self.state[BatchType.MEASUREMENTS].cursor))
        self.notifier.ready(f"connected; pushing to {s.shown_ingest_url}")
        while not stop.is_set():
            self.notifier.ping()
            await self.tick(conn, client, read_ahead, stop)
            await self.reconciler.observe(conn, client.identity)
            busy = time.monotonic() >= self.due[BatchType.MEASUREMENTS]
            if self.reconciler.is_due(time.monotonic(), busy) and not stop.is_set():
                await self.reconciler.run(conn, client)
            wake = min(self._next_tick, self.health.heartbeat_at(client), *self.due.values())
            if self.reconciler.enabled:
                wake = min(wake, self.reconciler.due)
            await self.notifier.idle(stop, wake)

    async def tick(
        self,
        conn: psycopg.AsyncConnection[Any],
        client: IngestClient,
        read_ahead: ReadAhead,
        stop: asyncio.Event,
    ) -> None:
        """One round, top to bottom: every push interval the restore check, the backlog count
        and STATUS=; then each resource that is due, in the protocol's order (sites, devices,
        measurements, shipped by `shipping.py`, which says when each is due next); then the health
        report when one is due (`ops/health.py`). Collaborators return what they found; none
        calls back into the tick."""
        now = time.monotonic()
        if now >= self._next_tick:
            self._next_tick = now + self.settings.push_interval_s
            await self._check_horizon(conn)
            await self._observe_backlog(conn)
            self.notifier.status(self.outcomes.status_text())
        ship = self.shipper
        for resource in (BatchType.SITES, BatchType.DEVICES):
            if time.monotonic() >= self.due[resource] and not stop.is_set():
                self.due[resource] = await ship.full_set(conn, client, resource, self._next_tick)
        resource = BatchType.MEASUREMENTS
        if time.monotonic() >= self.due[resource] and not stop.is_set():
            self.due[resource] = await ship.measurements(
                conn, client, read_ahead, stop, self._next_tick
            )
        await self.health.tick(conn, client, self.state, self.progress,
                               self.outcomes.last_failure, self.blocker)  # fmt: skip

    async def _observe_backlog(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """Count the rows after the cursor when due (bounded: see `ops/progress.py`)."""
        if self.progress.count_due():
            cursor = self.state[BatchType.MEASUREMENTS].cursor
            self.progress.counted(await source.read_backlog(conn, cursor))

    async def _check_horizon(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """Once per tick: recover from a restored database, report what holds the cursor back."""
        recovery = await recover_restored_database(conn, self.state)
        self.metrics.restamped_rows.inc(recovery.restamped)
        if recovery.reset:
            self.metrics.cursor_resets.inc()
            self.progress.recount()
        self.blocker = await source.find_blocking_transaction(
            conn, self.settings.blocking_txn_warn_s
        )
        self.metrics.blocking_transaction_age.set(self.blocker.age_s if self.blocker else 0.0)
        if self.blocker is not None:
            log.warning(
                "cursor_held_back",
                hint="a long-open transaction holds the push cursor back",
                snapshot_xmin=recovery.horizon.xmin,
                **self.blocker.as_log(),
            )


async def run(
    settings: Settings,
    stop_event: asyncio.Event,
    *,
    rng: random.Random | None = None,
    notifier: SystemdNotifier | None = None,
) -> Pusher | None:
    """Push until `stop_event` is set; then let the in-flight batch finish within the
    shutdown deadline, or abandon it (its cursor not advanced). Returns the finished Pusher
    (for its metrics), or None when pushing is disabled.

    `notifier` (made by `pusher run` from $NOTIFY_SOCKET, see `ops/systemd.py`) is told READY,
    STATUS, WATCHDOG and STOPPING, and closed on return; without one nothing is sent."""
    notifier = notifier or SystemdNotifier(None)
    try:
        if not settings.enabled:
            log.info("push_disabled", hint="nothing to do until PUSHER_PUSH_ENABLED=true")
            notifier.ready("push disabled (PUSHER_PUSH_ENABLED is not true)")
            notifier.stopping()
            return None
        if settings.allow_plaintext and settings.ingest_url.startswith("http://"):
            log.warning(
                "plaintext_allowed",
                ingest_url=settings.shown_ingest_url,
                hint="PUSHER_ALLOW_PLAINTEXT=true: the token travels in clear and an answer "
                "forged on the path can move the cursor; use https://",
            )
        log.info(
            "starting",
            ingest_url=settings.shown_ingest_url,
            interval_s=settings.push_interval_s,
            batch_size=settings.batch_size,
        )
        pusher = Pusher(settings, rng, notifier)
        async with contextlib.AsyncExitStack() as stack:
            if settings.metrics_port:
                url = await stack.enter_async_context(
                    serve_metrics(
                        pusher.metrics.registry, settings.metrics_host, settings.metrics_port
                    )
                )
                log.info("metrics_listening", url=url)
            await _run_loop(pusher, stop_event)
        log.info("stopped", **pusher.metrics.summary())
        return pusher
    finally:
        notifier.close()


async def _run_loop(pusher: Pusher, stop_event: asyncio.Event) -> None:
    deadline_s = pusher.settings.shutdown_deadline_s
    main = asyncio.create_task(pusher.loop(stop_event), name="pusher-loop")
    stopping = asyncio.create_task(stop_event.wait(), name="pusher-stop")
    try:
        await asyncio.wait({main, stopping}, return_when=asyncio.FIRST_COMPLETED)
        pusher.notifier.stopping()
        if not main.done():
            done, _ = await asyncio.wait({main}, timeout=deadline_s)
            if not done:
                log.warning(
                    "shutdown_deadline_passed",
                    hint="abandoning the in-flight batch (cursor not advanced)",
                    deadline_s=deadline_s,
                )
                main.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await main
        if not main.cancelled():
            main.result()
    finally:
        stopping.cancel()
        if not main.done():
            main.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await main
