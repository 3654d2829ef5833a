"""When the daemon reconciles: at start, every PUSHER_RECONCILE_INTERVAL_S, and between
PUSHER_RECONCILE_SETTLE_S and twice that (at random, so that thousands of gateways seeing the
same change do not all ask at once) after ingestd's answers name another central database
(failover, restore, restart: `X-Database-Identity`). A failed pass is tried again after the settle time
(doubling up to the interval). The push goes first: a pass waits while a backlog drains, for at
most one settle time past its due time. The waits after a change and after a failure are the
retry policy's (`pusher.retry`: CENTRAL_CHANGED, RECONCILE_FAILED).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import structlog

from pusher.delivery.client import IngestClient
from pusher.reconcile.metrics import ReconcileMetrics
from pusher.reconcile.passes import PassFailed, PassReport, run_pass
from pusher.retry import RetryEvent, RetryPolicy
from pusher.settings import Settings
from pusher.source.columns import columnar_encoder
from pusher.state.reconcile_state import (
    PassRecord,
    load_reconcile_state,
    note_identity,
    record_pass,
)

__all__ = ["Reconciler"]

log = structlog.get_logger("pusher")


class Reconciler:
    """The daemon's reconciliation: its schedule, the identity it last saw, its books."""

    def __init__(self, settings: Settings, metrics: ReconcileMetrics, policy: RetryPolicy) -> None:
        self.settings = settings
        self.metrics = metrics
        self.policy = policy
        self.due = time.monotonic()
        self.identity: str | None = None
        self.earliest: datetime | None = None
        self._failures = 0

    @property
    def enabled(self) -> bool:
        return self.settings.reconcile_interval_s > 0

    async def start_session(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """A (re)connected session: the identity last seen comes from the database."""
        state = await load_reconcile_state(conn)
        self.identity = state.get("identity")
        known = state.get("known_differences", 0)
        self.metrics.known_differences.set(known)

    async def observe(self, conn: psycopg.AsyncConnection[Any], identity: str | None) -> None:
        """Note the identity ingestd's latest answer carried; a change brings the next pass
        forward to the settle time."""
        if identity is None or identity == self.identity:
            return
        if self.identity is not None:
            log.warning(
                "central_database_changed",
                previous=self.identity,
                identity=identity,
                hint="a reconciliation pass follows in PUSHER_RECONCILE_SETTLE_S",
            )
            self.metrics.identity_changes.inc()
            settle = self.policy.delay(RetryEvent.CENTRAL_CHANGED, 1)
            self.due = min(self.due, time.monotonic() + settle)
        self.identity = identity
        await note_identity(conn, identity)

    def is_due(self, now: float, push_busy: bool) -> bool:
        if not self.enabled or now < self.due:
            return False
        return not push_busy or now >= self.due + self.policy.settle_s

    async def run(self, conn: psycopg.AsyncConnection[Any], client: IngestClient) -> None:
        """One pass with its books kept; a failure is logged and the pass retried later."""
        s = self.settings
        try:
            report = await run_pass(
                conn,
                client,
                horizon=timedelta(days=s.reconcile_horizon_days),
                batch_size=s.batch_size,
                earliest=self.earliest,
                build=columnar_encoder(s.columnar_encoder),
            )
        except PassFailed as exc:
            self._failures += 1
            delay = self.policy.delay(RetryEvent.RECONCILE_FAILED, self._failures)
            self.due = time.monotonic() + delay
            self.metrics.passes.labels("failed").inc()
            self.metrics.last_pass.set(time.time())
            log.error("reconcile_failed", error=str(exc)[:500], retry_in_s=round(delay, 1))
            await record_pass(conn, PassRecord("failed", 0, 0, 0, 0, 0.0, 0, str(exc)), None)
            return
        self._failures = 0
        self.earliest = report.window_start or self.earliest
        self.due = time.monotonic() + s.reconcile_interval_s
        self.book(report)
        await record_pass(conn, record_of(report), client.identity)
        log.info("reconciled", **report.as_log())

    def book(self, report: PassReport) -> None:
        m = self.metrics
        m.passes.labels(report.result).inc()
        m.rows_resent.inc(report.resent)
        m.rows_restored.inc(report.restored)
        m.cells_repaired.inc(report.repaired)
        m.bytes.labels("sent").inc(report.bytes_sent)
        m.bytes.labels("received").inc(report.bytes_received)
        m.known_differences.set(report.known)
        m.last_pass.set(datetime.now(UTC).timestamp())


def record_of(report: PassReport) -> PassRecord:
    return PassRecord(
        report.result,
        report.compared,
        report.repaired,
        report.resent,
        report.restored,
        report.duration_s,
        report.bytes_sent,
    )
