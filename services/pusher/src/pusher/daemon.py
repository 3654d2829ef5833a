"""The push loop: sites, devices, then measurement batches, each resource on its own schedule.

Every resource has a due time. A tick (every `push_interval_s`) makes all three due, in the
protocol's order. A full measurement batch makes measurements due again at once, so a backlog
drains back to back at the ingest rate instead of N batches per interval; while one batch is on
the wire the next is already read and compressed. A failure makes only its resource wait
(per-resource backoff, `backoff.py`). The stop event is checked between batches; `run` gives
an in-flight batch until the shutdown deadline and then cancels it, which abandons the batch
without advancing the cursor.

Progress is kept in Prometheus metrics (`metrics.py`), served when FLEET_METRICS_PORT is set,
and told to systemd when run under it (`systemd.py`): READY=1 once the customer database is
reached, STATUS= each tick, WATCHDOG=1 from the loop itself, STOPPING=1 on shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import time
from dataclasses import dataclass, replace
from typing import Any

import psycopg
import structlog
from fleetcore import PushCursor

from pusher import source
from pusher.backoff import (
    exponential_delay,
    grow_batch_size,
    retry_after_delay,
    shrink_batch_size,
)
from pusher.delivery import Delivered, IngestClient
from pusher.errors import (
    DeliveryError,
    PayloadTooLarge,
    PermanentDeliveryError,
    RetryLater,
)
from pusher.metrics import PusherMetrics, failure_status, serve_metrics
from pusher.progress import PushProgress
from pusher.settings import Settings
from pusher.source import BlockingTransaction, FullSet, MeasurementBatch
from pusher.state import (
    Resource,
    ResourceState,
    load_states,
    quarantine_row,
    record_failure,
    record_success,
    reset_cursor,
)
from pusher.systemd import SystemdNotifier

__all__ = ["Pusher", "run"]

log = structlog.get_logger("pusher")


async def _discard(task: asyncio.Task[Any]) -> None:
    """Cancel a read-ahead and wait for it, so the connection is free again."""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, psycopg.Error):
        await task


async def _matches(task: asyncio.Task[_Prepared], cursor: PushCursor, size: int) -> bool:
    with contextlib.suppress(asyncio.CancelledError, psycopg.Error):
        prepared = await task
        return prepared.batch.start == cursor and prepared.batch.limit <= size
    return False


async def _sleep(stop: asyncio.Event, seconds: float) -> None:
    """Sleep, waking early when the stop event is set."""
    if seconds <= 0:
        await asyncio.sleep(0)
        return
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


@dataclass(frozen=True, slots=True)
class _Prepared:
    batch: MeasurementBatch
    gzipped: bytes


class Pusher:
    """State of one running daemon: per-resource schedule, batch size and failure counts,
    its metrics, and what it tells systemd."""

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
        self.states: dict[Resource, ResourceState] = {}
        self.due: dict[Resource, float] = {}
        self.blocker: BlockingTransaction | None = None
        self._next_tick = 0.0
        self._db_failures = 0
        self._prefetch: asyncio.Task[_Prepared] | None = None
        self.progress = PushProgress(self.metrics, settings.backlog_count_interval_s)
        self._last_failure: dict[Resource, str] = {}

    async def loop(self, stop: asyncio.Event) -> None:
        """Run until `stop` is set; reconnect to the customer database when it goes away."""
        s = self.settings
        async with IngestClient(
            s.ingest_url,
            s.token,
            timeout_s=s.request_timeout_s,
            ca_bundle=s.ca_bundle,
            gzip_level=s.gzip_level,
        ) as client:
            while not stop.is_set():
                try:
                    conn = await source.connect(s.database_url)
                    async with conn:
                        try:
                            await self._session(conn, client, stop)
                        finally:
                            if self._prefetch is not None:
                                await _discard(self._prefetch)
                                self._prefetch = None
                except psycopg.OperationalError as exc:
                    self._db_failures += 1
                    delay = exponential_delay(
                        self._db_failures, min(s.backoff_base_s, 5.0), s.backoff_cap_s, self.rng
                    )
                    log.error(
                        "customer database unavailable",
                        error=str(exc).strip(),
                        retry_in_s=round(delay, 3),
                    )
                    self.metrics.database_errors.inc()
                    self.notifier.status(f"customer database unavailable; retrying in {delay:.0f}s")
                    await self._idle(stop, time.monotonic() + delay)

    async def _idle(self, stop: asyncio.Event, until: float) -> None:
        """Sleep until `until` (monotonic) or the stop event, pinging the watchdog on time."""
        while True:
            self.notifier.ping()
            now = time.monotonic()
            if now >= until or stop.is_set():
                await asyncio.sleep(0)
                return
            await _sleep(stop, min(until, self.notifier.next_ping_at()) - now)

    async def _session(
        self, conn: psycopg.AsyncConnection[Any], client: IngestClient, stop: asyncio.Event
    ) -> None:
        s = self.settings
        self.states = await load_states(conn, s.batch_size)
        for resource, state in self.states.items():
            size = min(state.batch_size, s.batch_size)
            self.states[resource] = replace(state, batch_size=size)
        self._db_failures = 0
        now = time.monotonic()
        self._next_tick = now
        self.due = dict.fromkeys(Resource, now)
        self._restore_progress()
        log.info("pusher connected", cursor=str(self.states[Resource.MEASUREMENTS].cursor))
        self.notifier.ready(f"connected; pushing to {s.ingest_url}")
        while not stop.is_set():
            self.notifier.ping()
            now = time.monotonic()
            if now >= self._next_tick:
                self._next_tick = now + s.push_interval_s
                await self._check_horizon(conn)
                await self._observe_backlog(conn)
                self.notifier.status(self._status_text())
            for resource in (Resource.SITES, Resource.DEVICES):
                if time.monotonic() >= self.due[resource] and not stop.is_set():
                    await self._push_full_set(conn, client, resource)
            if time.monotonic() >= self.due[Resource.MEASUREMENTS] and not stop.is_set():
                await self._push_measurements(conn, client, stop)
            await self._idle(stop, min(self._next_tick, *self.due.values()))

    def _restore_progress(self) -> None:
        """Set the gauges that outlive a restart from the stored state."""
        self.metrics.retry_at.clear()
        for resource, state in self.states.items():
            self.metrics.consecutive_failures.labels(resource.value).set(state.consecutive_failures)
        measurements = self.states[Resource.MEASUREMENTS]
        self.metrics.batch_size.labels(Resource.MEASUREMENTS.value).set(measurements.batch_size)
        self.progress.restore(self.states)

    async def _observe_backlog(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """Count the rows after the cursor when due (bounded: see `progress.py`)."""
        if self.progress.count_due():
            cursor = self.states[Resource.MEASUREMENTS].cursor
            self.progress.counted(await source.read_backlog(conn, cursor))

    def _status_text(self) -> str:
        """One line for `systemctl status`."""
        shipped = self.metrics.value(
            "fleet_pusher_rows_shipped_total", resource=Resource.MEASUREMENTS.value
        )
        lag = self.progress.measurement_lag_s
        text = f"{shipped:.0f} rows shipped, backlog {self.progress.backlog_rows}, lag {lag:.0f}s"
        failing = [
            f"{resource.value} failing ({self._last_failure.get(resource, '?')}) "
            f"x{state.consecutive_failures}"
            for resource, state in self.states.items()
            if state.consecutive_failures
        ]
        return "; ".join([text, *failing])

    async def _check_horizon(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """Once per tick: recover from a restored database, report what holds the cursor back."""
        horizon = await source.read_horizon(conn)
        if horizon.has_future_rows:
            log.error(
                "rows stamped beyond this server's transaction counter (restored or moved "
                "database?): restamping them so they ship",
                xmax=horizon.xmax,
            )
            restamped = await source.restamp_future_rows(conn)
            log.warning("future rows restamped", rows=restamped)
            self.metrics.restamped_rows.inc(restamped)
        cursor = self.states[Resource.MEASUREMENTS].cursor
        if cursor.xid >= horizon.xmax:
            log.error(
                "stored cursor lies beyond this server's transaction counter (restored or "
                "moved database?): starting over; rows already shipped are sent again and "
                "ingestd keeps one copy",
                cursor=str(cursor),
                xmax=horizon.xmax,
            )
            start = PushCursor.start()
            await reset_cursor(conn, Resource.MEASUREMENTS, start)
            self.states[Resource.MEASUREMENTS] = replace(
                self.states[Resource.MEASUREMENTS], cursor=start
            )
            self.metrics.cursor_resets.inc()
            self.progress.recount()
        self.blocker = await source.find_blocking_transaction(
            conn, self.settings.blocking_txn_warn_s
        )
        self.metrics.blocking_transaction_age.set(self.blocker.age_s if self.blocker else 0.0)
        if self.blocker is not None:
            log.warning(
                "a long-open transaction holds the push cursor back",
                snapshot_xmin=horizon.xmin,
                **self.blocker.as_log(),
            )

    async def _push_full_set(
        self, conn: psycopg.AsyncConnection[Any], client: IngestClient, resource: Resource
    ) -> None:
        reader = source.read_sites if resource is Resource.SITES else source.read_devices
        full: FullSet = await reader(conn)
        self.metrics.batch_size.labels(resource.value).set(full.count)
        started = time.perf_counter()
        gzipped = await client.compress(full.body)
        try:
            answer = await client.send(resource.value, gzipped, full.cursor_label(resource.value))
        except PayloadTooLarge as exc:
            # A full set cannot be split without breaking its meaning (absent = deleted).
            await self._on_failure(
                conn,
                resource,
                PermanentDeliveryError(
                    f"the full {resource.value} set ({full.count} rows, {len(gzipped)} bytes gzip'd) "
                    f"is over ingestd's limit: {exc.detail}",
                    status=413,
                ),
            )
            self.progress.full_set(resource, full, delivered=False)
            return
        except DeliveryError as exc:
            await self._on_failure(conn, resource, exc)
            self.progress.full_set(resource, full, delivered=False)
            return
        self.progress.full_set(resource, full, delivered=True)
        await self._on_success(
            conn,
            resource,
            answer,
            rows=full.count,
            cursor=None,
            newest=None,
            wire=len(gzipped),
            raw=len(full.body),
            started=started,
        )
        self.due[resource] = self._next_tick

    async def _prepare(
        self, conn: psycopg.AsyncConnection[Any], client: IngestClient, after: PushCursor, size: int
    ) -> _Prepared:
        batch = await source.read_measurements(conn, after, size)
        gzipped = await client.compress(batch.body) if batch.count else b""
        return _Prepared(batch, gzipped)

    async def _push_measurements(
        self, conn: psycopg.AsyncConnection[Any], client: IngestClient, stop: asyncio.Event
    ) -> None:
        """Up to N batches from the cursor; leaves measurements due now when the backlog goes on."""
        resource = Resource.MEASUREMENTS
        n = self.settings.max_batches_per_tick
        state = self.states[resource]
        pending = await self._take_prefetch(state.cursor, state.batch_size)
        if pending is None:
            pending = self._start_prepare(conn, client, state.cursor, state.batch_size)
        try:
            for index in range(n):
                assert pending is not None
                prepared = await pending
                pending = None
                batch = prepared.batch
                if batch.count == 0:
                    self.due[resource] = self._next_tick
                    return
                if batch.full and not stop.is_set():
                    size = self.states[resource].batch_size
                    pending = self._start_prepare(conn, client, batch.end, size)
                started = time.perf_counter()
                try:
                    answer = await client.send(resource.value, prepared.gzipped, batch.end.encode())
                except PayloadTooLarge as exc:
                    await self._on_too_large(conn, batch, exc)
                    self.due[resource] = time.monotonic()
                    return
                except DeliveryError as exc:
                    await self._on_failure(conn, resource, exc)
                    return
                await self._on_success(
                    conn,
                    resource,
                    answer,
                    rows=batch.count,
                    cursor=batch.end,
                    newest=batch.newest_received_at,
                    wire=len(prepared.gzipped),
                    raw=len(batch.body),
                    started=started,
                )
                if not batch.full:
                    self.due[resource] = self._next_tick
                    return
                if stop.is_set() or index + 1 == n:
                    break
            # A backlog: measurements stay due, and the batch read ahead carries over.
            self.due[resource] = time.monotonic()
            if pending is not None:
                self._prefetch, pending = pending, None
        finally:
            if pending is not None:
                await _discard(pending)

    def _start_prepare(
        self,
        conn: psycopg.AsyncConnection[Any],
        client: IngestClient,
        after: PushCursor,
        size: int,
    ) -> asyncio.Task[_Prepared]:
        return asyncio.create_task(self._prepare(conn, client, after, size))

    async def _take_prefetch(self, cursor: PushCursor, size: int) -> asyncio.Task[_Prepared] | None:
        """The batch read ahead in the previous round, if it still starts at the cursor."""
        task, self._prefetch = self._prefetch, None
        if task is None:
            return None
        if task.done() and not task.cancelled() and task.exception() is None:
            prepared = task.result()
            if prepared.batch.start == cursor and prepared.batch.limit <= size:
                return task
        elif not task.done():
            return task if await _matches(task, cursor, size) else None
        await _discard(task)
        return None

    async def _on_success(
        self,
        conn: psycopg.AsyncConnection[Any],
        resource: Resource,
        answer: Delivered,
        *,
        rows: int,
        cursor: PushCursor | None,
        newest: Any,
        wire: int,
        raw: int,
        started: float,
    ) -> None:
        state = self.states[resource]
        size = grow_batch_size(state.batch_size, self.settings.batch_size)
        await record_success(
            conn,
            resource,
            cursor=cursor,
            batch_size=size,
            status=answer.status,
            rows=rows,
            newest_received_at=newest,
        )
        self.states[resource] = replace(
            state,
            cursor=cursor if cursor is not None else state.cursor,
            batch_size=size,
            consecutive_failures=0,
            shipped_rows=state.shipped_rows + rows,
        )
        self.metrics.delivered(resource, rows, answer.rejected)
        self._last_failure.pop(resource, None)
        if resource is Resource.MEASUREMENTS:
            self.metrics.batch_size.labels(resource.value).set(size)
            self.progress.measurements_moved(rows, newest)
        fields: dict[str, Any] = {
            "resource": resource.value,
            "rows": rows,
            "accepted": answer.accepted,
            "duplicates": answer.duplicates,
            "rejected": answer.rejected,
            "body_bytes": raw,
            "wire_bytes": wire,
            "ms": round((time.perf_counter() - started) * 1000, 1),
        }
        if cursor is not None:
            fields["cursor"] = str(cursor)
        if answer.rejected:
            log.warning(
                "batch delivered; ingestd refused some rows (kept in its dead-letter table)",
                first_errors=answer.errors[:5],
                **fields,
            )
        else:
            log.info("batch delivered", **fields)

    async def _on_too_large(
        self, conn: psycopg.AsyncConnection[Any], batch: MeasurementBatch, exc: PayloadTooLarge
    ) -> None:
        resource = Resource.MEASUREMENTS
        state = self.states[resource]
        self.metrics.failed(
            resource, exc, consecutive=state.consecutive_failures, retry_at=time.monotonic()
        )
        if batch.count > 1:
            size = shrink_batch_size(min(state.batch_size, batch.count))
            log.warning(
                "batch too large for ingestd: halving",
                rows=batch.count,
                batch_size=size,
                detail=exc.detail,
            )
            await record_failure(
                conn,
                resource,
                batch_size=size,
                delay_s=0.0,
                status=413,
                error=exc.detail,
                counts_as_failure=False,
            )
            self.states[resource] = replace(state, batch_size=size)
            self.metrics.batch_size.labels(resource.value).set(size)
            return
        assert batch.first_row_json is not None
        reason = f"refused by ingestd even alone: {exc.detail}"
        log.error(
            "single row too large for ingestd: quarantined locally",
            cursor=str(batch.end),
            bytes=len(batch.body),
            detail=exc.detail,
        )
        await quarantine_row(
            conn, row_cursor=batch.end, payload=batch.first_row_json, reason=reason, batch_size=1
        )
        self.states[resource] = replace(state, cursor=batch.end, batch_size=1)
        self.metrics.quarantined_rows.inc()
        self.metrics.batch_size.labels(resource.value).set(1)
        self.progress.measurements_moved(1, None)

    async def _on_failure(
        self, conn: psycopg.AsyncConnection[Any], resource: Resource, exc: DeliveryError
    ) -> None:
        s = self.settings
        state = self.states[resource]
        failures = state.consecutive_failures + 1
        if isinstance(exc, RetryLater):
            delay = retry_after_delay(
                exc.retry_after_s,
                failures=failures,
                base_s=s.backoff_base_s,
                cap_s=s.backoff_cap_s,
                jitter_s=s.retry_after_jitter_s,
                rng=self.rng,
            )
        elif isinstance(exc, PermanentDeliveryError):
            delay = s.backoff_cap_s
        else:
            delay = exponential_delay(failures, s.backoff_base_s, s.backoff_cap_s, self.rng)
        await record_failure(
            conn,
            resource,
            batch_size=state.batch_size,
            delay_s=delay,
            status=exc.status,
            error=exc.detail,
        )
        self.states[resource] = replace(state, consecutive_failures=failures)
        self.due[resource] = time.monotonic() + delay
        self.metrics.failed(resource, exc, consecutive=failures, retry_at=self.due[resource])
        self._last_failure[resource] = failure_status(exc)
        fields = {
            "resource": resource.value,
            "status": exc.status,
            "error": exc.detail,
            "failures": failures,
            "retry_in_s": round(delay, 3),
        }
        if isinstance(exc, PermanentDeliveryError):
            if exc.transport == "tls":
                log.error(
                    "ingestd's TLS certificate cannot be verified (check FLEET_CA_BUNDLE and "
                    "the host name in FLEET_INGEST_URL); retrying at the backoff cap",
                    **fields,
                )
            else:
                cause = _permanent_cause(exc.status)
                log.error(
                    f"ingestd refused the request: {cause}; retrying at the backoff cap", **fields
                )
        else:
            log.warning("batch not delivered; will retry", **fields)


def _permanent_cause(status: int | None) -> str:
    return {
        400: "the request is malformed (pusher and ingestd disagree on the protocol)",
        401: "the push token is missing, unknown, revoked or expired (check FLEET_TOKEN)",
        403: "the push token is not allowed to push (check FLEET_TOKEN)",
        404: "no ingest endpoint at this URL (check FLEET_INGEST_URL)",
        413: "the batch can never fit ingestd's size limit",
        415: "ingestd does not accept this encoding (pusher and ingestd disagree)",
    }.get(status or 0, f"HTTP {status}: the configuration is wrong")


async def run(
    settings: Settings, stop_event: asyncio.Event, *, rng: random.Random | None = None
) -> Pusher | None:
    """Push until `stop_event` is set; then let the in-flight batch finish within the
    shutdown deadline, or abandon it (its cursor not advanced). Returns the finished Pusher
    (for its metrics), or None when pushing is disabled.

    Under systemd ($NOTIFY_SOCKET set) the unit is told READY, STATUS, WATCHDOG and STOPPING."""
    notifier = SystemdNotifier.from_env(os.environ)
    try:
        if not settings.enabled:
            log.info("push disabled (FLEET_PUSH_ENABLED is not true): nothing to do")
            notifier.ready("push disabled (FLEET_PUSH_ENABLED is not true)")
            notifier.stopping()
            return None
        log.info(
            "pusher starting",
            ingest_url=settings.ingest_url,
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
                log.info("metrics listening", url=url)
            await _run_loop(pusher, stop_event)
        log.info("pusher stopped", **pusher.metrics.summary())
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
                    "shutdown deadline passed: abandoning the in-flight batch (cursor not advanced)",
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
