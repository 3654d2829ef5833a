"""The health report this gateway sends the centre (docs/PROTOCOL.md, "Health reports").

Built from what the daemon already knows — the backlog, lag and oldest unshipped row
(`progress`), each resource's failures and the last one's status (push state, `outcomes`), the
blocking transaction (the tick's horizon check), the clock offset and bytes sent (the client,
from the `Date` of ingestd's answers) — plus the quarantined rows and the free disk under the database (`source.footprint`; the data
directory is asked once), looked at every push interval (at least `CHECK_S` apart), and the
database's size, read only when a report goes.

When: at most once per push interval, a report goes when

- ingestd advertised reports (`X-Health-Report` on an answer) and what an operator would act on
  changed (`signature`: failures and their status, quarantined rows, a blocking transaction's
  age or the backlog/lag crossing a power of two, the clock offset past 30 s steps, free disk
  halving or doubling, version, wire format, upload cap), or `REFRESH_S` passed;
- or no request at all went to ingestd for PUSHER_HEALTH_INTERVAL_S (the heartbeat: the centre
  calls a gateway silent after a few of these). Before any answer said whether ingestd takes
  reports, the heartbeat is the probe; an older ingestd answers it 404 and is not asked again
  until an answer advertises reports.

A report that fails is not retried before the next push interval, and never touches the
measurement path.
"""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Mapping
from typing import Any

import msgspec
import psycopg
import structlog
from fleetcore import HealthReport, ResourceHealth, encode_report
from fleetcore.protocol import BatchType, WireFormat

from pusher import source
from pusher.delivery import IngestClient
from pusher.ops.progress import PushProgress
from pusher.settings import Settings
from pusher.source import BlockingTransaction
from pusher.state import PushState, count_quarantined
from pusher.versions import pusher_version

__all__ = ["REFRESH_S", "HealthReporter", "signature"]

log = structlog.get_logger("pusher")

REFRESH_S = 3600.0
"""A report goes at least this often while ingestd takes them, changed or not."""
CHECK_S = 10.0
"""What a report would say is looked at no more often than this (or the push interval, if
longer): a few cheap reads, not on every pass of a fast loop."""

_VERSION = pusher_version()
_HOST = socket.gethostname()[:64]


def _steps(value: float, unit: float) -> int:
    """0 below `unit`, then 1, 2, 3 … each time the value doubles."""
    return int(abs(value) // unit).bit_length() * (1 if value >= 0 else -1)


def signature(report: HealthReport) -> tuple[Any, ...]:
    """What must be told at once when it changes; the rest waits for the hourly refresh."""
    resources = tuple(
        (name, r.consecutive_failures > 0, min(r.consecutive_failures, 3), r.last_error)
        for name, r in report.resources().items()
    )
    m = report.measurements or ResourceHealth()
    return (
        report.version,
        report.wire_format,
        report.upload_cap,
        report.push_interval_s,
        report.quarantined_rows,
        _steps(report.blocking_age_s, 1.0),
        _steps(m.backlog_rows, 10_000),
        _steps(max(m.lag_s, m.oldest_unshipped_age_s), 300.0),
        _steps(report.clock_offset_s or 0.0, 30.0),
        _steps(report.disk_free_bytes or 0, 2**26),
        resources,
    )


class HealthReporter:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.started_at = int(time.time())
        self._checked = float("-inf")
        self._sent: tuple[Any, ...] | None = None
        self._refresh_at = 0.0
        self.reports = 0
        self._data_directory: str | None = None

    def heartbeat_at(self, client: IngestClient) -> float:
        """When the heartbeat falls due (monotonic), for the daemon's idle wait."""
        if self.settings.health_interval_s <= 0 or client.health_advertised is False:
            return float("inf")
        return client.last_request_at + self.settings.health_interval_s

    async def tick(
        self,
        conn: psycopg.AsyncConnection[Any],
        client: IngestClient,
        state: PushState,
        progress: PushProgress,
        last_failure: Mapping[BatchType, str],
        blocker: BlockingTransaction | None,
    ) -> None:
        """Send a report if one is due (see the module docstring)."""
        s = self.settings
        now = time.monotonic()
        if s.health_interval_s <= 0 or now - self._checked < min(
            s.push_interval_s, s.health_interval_s
        ):
            return
        self._checked = now
        heartbeat = now >= client.last_request_at + s.health_interval_s
        if client.health_advertised is not True and not heartbeat:
            return  # not known to take reports: only the heartbeat probes
        if client.health_advertised is False:
            return
        report = await self.build(conn, client, state, progress, last_failure, blocker)
        marks = signature(report)
        if not heartbeat and marks == self._sent and now < self._refresh_at:
            return
        report = msgspec.structs.replace(report, db_bytes=await source.database_size(conn))
        status = await client.send_report(encode_report(report))
        if status == 200:
            self._sent, self._refresh_at = marks, now + REFRESH_S
            self.reports += 1
        elif status in (404, 405):
            client.health_advertised = False  # an older ingestd: it said nothing of reports
        else:
            log.warning("health_report_failed", status=status)

    async def _free_disk(self, conn: psycopg.AsyncConnection[Any]) -> int | None:
        if self._data_directory is None:
            self._data_directory = await source.data_directory(conn) or ""
        return source.free_disk_bytes(self._data_directory)

    async def build(
        self,
        conn: psycopg.AsyncConnection[Any],
        client: IngestClient,
        state: PushState,
        progress: PushProgress,
        last_failure: Mapping[BatchType, str],
        blocker: BlockingTransaction | None,
    ) -> HealthReport:
        s = self.settings
        resources: dict[str, ResourceHealth | None] = {}
        for resource in BatchType:
            failures = state[resource].consecutive_failures
            kind = last_failure.get(resource) if failures else None
            extra: dict[str, Any] = {}
            if resource is BatchType.MEASUREMENTS:
                extra = {
                    "backlog_rows": progress.backlog_rows,
                    "lag_s": round(progress.measurement_lag_s, 1),
                    "oldest_unshipped_age_s": round(progress.oldest_unshipped_age_s, 1),
                }
            health = ResourceHealth(
                consecutive_failures=failures,
                last_error=kind if kind and re.fullmatch(r"[a-z0-9_]{1,32}", kind) else None,
                **extra,
            )
            resources[resource.value] = health if health != ResourceHealth() else None
        return HealthReport(
            version=_VERSION,
            wire_format="columnar" if client.format is WireFormat.COLUMNAR else "json",
            started_at=self.started_at,
            push_interval_s=s.push_interval_s,
            heartbeat_s=s.health_interval_s,
            quarantined_rows=await count_quarantined(conn),
            blocking_age_s=round(blocker.age_s, 1) if blocker else 0.0,
            disk_free_bytes=await self._free_disk(conn),
            clock_offset_s=client.clock_offset_s,
            upload_cap=s.max_upload_bytes_per_s,
            sent_bytes=client.sent_bytes,
            host=_HOST if re.fullmatch(r"[0-9A-Za-z.:_-]{1,64}", _HOST) else None,
            sites=resources["sites"],
            devices=resources["devices"],
            measurements=resources["measurements"],
        )
