"""What follows each answer to a batch: the push state, the metrics, the progress gauges and the
log line, for a delivery, a 413, a refused encoding and every other failure; also the bytes that
went on the wire, and the STATUS= line told to systemd.

The daemon sends and hands the outcome here (`delivered` or `not_delivered`, one call each);
this module keeps the books of it and says when the resource is due again, from the retry
policy (`pusher.retry`). The stored state changes only through `PushState`, whose methods write
the row and the in-memory copy together.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import msgspec
import psycopg
import structlog
from fleetcore import PushCursor
from fleetcore.answers import IngestAnswer
from fleetcore.protocol import BatchType, WireFormat
from fleetservice import log_output_failures

from pusher.delivery.answers import printable
from pusher.delivery.uploadcap import drain_seconds
from pusher.errors import DeliveryError, ForeignAnswer, PayloadTooLarge, PermanentDeliveryError
from pusher.ops.metrics import PusherMetrics, failure_status
from pusher.ops.progress import PushProgress
from pusher.retry import RetryEvent, RetryPolicy, event_of, grow_batch_size, shrink_batch_size
from pusher.settings import Settings
from pusher.source import FullSet, MeasurementBatch
from pusher.state import PushState

__all__ = ["Outcomes"]

log = structlog.get_logger("pusher")


def _permanent_cause(status: int | None) -> str:
    return {
        400: "the request is malformed (pusher and ingestd disagree on the protocol)",
        401: "the push token is missing, unknown, revoked or expired (check PUSHER_TOKEN)",
        403: "the push token is not allowed to push (check PUSHER_TOKEN)",
        404: "no ingest endpoint at this URL (check PUSHER_INGEST_URL)",
        413: "the batch can never fit ingestd's size limit",
        415: "ingestd does not accept this encoding (pusher and ingestd disagree)",
    }.get(status or 0, f"HTTP {status}: the configuration is wrong")


class Outcomes:
    """The bookkeeping of answers, and the last failure of each resource (for STATUS=)."""

    def __init__(
        self,
        settings: Settings,
        state: PushState,
        metrics: PusherMetrics,
        progress: PushProgress,
        policy: RetryPolicy,
    ) -> None:
        self.settings = settings
        self.state = state
        self.metrics = metrics
        self.progress = progress
        self.policy = policy
        self.last_failure: dict[BatchType, str] = {}
        self._uploaded = 0

    async def delivered(
        self,
        conn: psycopg.AsyncConnection[Any],
        resource: BatchType,
        answer: IngestAnswer,
        *,
        rows: int,
        cursor: PushCursor | None,
        newest: datetime | None,
        wire: int,
        raw: int,
        started: float,
        sent_bytes: int,
        batch: MeasurementBatch | None = None,
        full: FullSet | None = None,
        digest: bytes | None = None,
        media_type: WireFormat | None = None,
    ) -> None:
        """ingestd answered 2xx: move the cursor (measurements), grow the batch size back; the
        rows of `batch` the protocol cannot carry are quarantined as the cursor passes them; a
        full set's (`full`) `digest` is kept, so an unchanged set is not sent again too soon.
        `sent_bytes` is the client's count of bytes on the wire so far."""
        if full is not None:
            self.progress.full_set(resource, full, delivered=True)
        size = grow_batch_size(self.state[resource].batch_size, self.settings.batch_size)
        passes = batch is not None and batch.uncarriable > 0
        await self.state.succeeded(
            conn,
            resource,
            cursor=cursor,
            batch_size=size,
            status=200,
            rows=rows,
            newest_received_at=newest,
            passed_from=batch.start if batch is not None and passes else None,
            sent_bytes=wire,
            digest=digest,
            media_type=media_type,
        )
        if batch is not None and passes:
            self._uncarriable(batch)
        self.metrics.delivered(resource, rows, answer.rejected)
        self.last_failure.pop(resource, None)
        if resource is BatchType.MEASUREMENTS:
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
                "batch_delivered_with_rejections",
                hint="ingestd keeps the refused rows in its dead-letter table",
                first_errors=msgspec.to_builtins(answer.errors[:5]),
                **fields,
            )
        else:
            log.info("batch_delivered", **fields)
        self._uploaded_bytes(sent_bytes)

    def _uncarriable(self, batch: MeasurementBatch) -> None:
        self.metrics.uncarriable_rows.inc(batch.uncarriable)
        self.metrics.quarantined_rows.inc(batch.uncarriable)
        log.error(
            "uncarriable_rows_quarantined",
            hint="rows with a time or received_at the protocol cannot carry (years 0001-9999): "
            "quarantined locally with the reason (app.fleet_push_quarantine), cursor moved on",
            rows=batch.uncarriable,
            cursor=str(batch.end),
        )

    async def only_uncarriable(
        self, conn: psycopg.AsyncConnection[Any], batch: MeasurementBatch
    ) -> None:
        """A batch with no row the protocol can carry: nothing is sent, the rows are
        quarantined and the cursor passes them."""
        resource = BatchType.MEASUREMENTS
        state = self.state[resource]
        await self.state.succeeded(
            conn,
            resource,
            cursor=batch.end,
            batch_size=state.batch_size,
            status=None,
            rows=0,
            newest_received_at=None,
            passed_from=batch.start,
        )
        self._uncarriable(batch)
        self.progress.measurements_moved(batch.count, None)

    async def not_delivered(
        self,
        conn: psycopg.AsyncConnection[Any],
        resource: BatchType,
        exc: DeliveryError,
        *,
        batch: MeasurementBatch | None = None,
        full: FullSet | None = None,
        wire_bytes: int = 0,
    ) -> float:
        """The send of `resource` (measurements: `batch`, a full set: `full`; `wire_bytes` on the
        wire) failed with `exc`: keep the books the policy's event calls for. Returns the
        monotonic time the resource is due again."""
        if full is not None:
            self.progress.full_set(resource, full, delivered=False)
        columnar = batch is not None and batch.format is WireFormat.COLUMNAR
        event = event_of(exc, columnar=columnar)
        if event is RetryEvent.FORMAT_REFUSED:
            # An older ingestd behind this address: the same rows again as gzip JSON (the client
            # stopped sending columnar).
            log.warning("columnar_refused", hint="ingestd refused the columnar encoding: gzip JSON")
            return time.monotonic() + self.policy.delay(RetryEvent.FORMAT_REFUSED, 1)
        if batch is None and event is RetryEvent.TOO_LARGE:
            # A full set cannot be split without breaking its meaning (absent = deleted).
            exc = PermanentDeliveryError(
                f"the full {resource.value} set ({full.count if full else 0} rows, "
                f"{wire_bytes} bytes gzip'd) "
                f"is over ingestd's limit: {exc.detail}",
                status=413,
            )
        elif batch is not None and isinstance(exc, PayloadTooLarge):
            if event is RetryEvent.TOO_LARGE:
                return await self._too_large(conn, batch, exc)
            return await self._bare_too_large(conn, batch, exc)
        return await self._failed(conn, resource, exc)

    async def _too_large(
        self, conn: psycopg.AsyncConnection[Any], batch: MeasurementBatch, exc: PayloadTooLarge
    ) -> float:
        """ingestd's own 413 for a measurements batch: halve it, or at one row quarantine it
        locally (a bare 413, a proxy's limit, halves and backs off but never quarantines)."""
        resource = BatchType.MEASUREMENTS
        state = self.state[resource]
        retry_at = time.monotonic() + self.policy.delay(RetryEvent.TOO_LARGE, 1)
        self.metrics.failed(
            resource, exc, consecutive=state.consecutive_failures, retry_at=time.monotonic()
        )
        if batch.count > 1:
            size = shrink_batch_size(min(state.batch_size, batch.count))
            log.warning(
                "batch_too_large",
                action="halving the batch",
                rows=batch.count,
                batch_size=size,
                detail=exc.detail,
            )
            await self.state.failed(
                conn,
                resource,
                batch_size=size,
                delay_s=0.0,
                status=413,
                error=exc.detail,
                counts_as_failure=False,
            )
            self.metrics.batch_size.labels(resource.value).set(size)
            return retry_at
        assert batch.first_row_json is not None
        reason = f"refused by ingestd even alone: {exc.detail}"
        log.error(
            "row_quarantined",
            hint="a single row too large for ingestd: kept in app.fleet_push_quarantine",
            cursor=str(batch.end),
            bytes=batch.body_bytes,
            detail=exc.detail,
        )
        await self.state.quarantine(
            conn, row_cursor=batch.end, payload=batch.first_row_json, reason=reason
        )
        self.metrics.quarantined_rows.inc()
        self.metrics.batch_size.labels(resource.value).set(1)
        self.progress.measurements_moved(1, None)
        return retry_at

    async def _bare_too_large(
        self, conn: psycopg.AsyncConnection[Any], batch: MeasurementBatch, exc: PayloadTooLarge
    ) -> float:
        resource = BatchType.MEASUREMENTS
        state = self.state[resource]
        size = shrink_batch_size(min(state.batch_size, batch.count))
        failures = state.consecutive_failures + 1
        delay = self.policy.delay(RetryEvent.TOO_LARGE_BARE, failures)
        await self.state.failed(
            conn, resource, batch_size=size, delay_s=delay, status=413, error=exc.detail
        )
        retry_at = time.monotonic() + delay
        self.metrics.failed(resource, exc, consecutive=failures, retry_at=retry_at)
        self.metrics.batch_size.labels(resource.value).set(size)
        self.last_failure[resource] = "413"
        log.warning(
            "foreign_413",
            hint="413 without ingestd's answer in it (a proxy's or load balancer's limit?): "
            "halving and backing off; nothing is quarantined for it",
            rows=batch.count,
            batch_size=size,
            detail=exc.detail,
            failures=failures,
            retry_in_s=round(delay, 3),
        )
        return retry_at

    async def _failed(
        self, conn: psycopg.AsyncConnection[Any], resource: BatchType, exc: DeliveryError
    ) -> float:
        """Not delivered: keep the cursor, wait as the retry policy says."""
        state = self.state[resource]
        failures = state.consecutive_failures + 1
        delay = self.policy.after(exc, failures)
        await self.state.failed(
            conn,
            resource,
            batch_size=state.batch_size,
            delay_s=delay,
            status=exc.status,
            error=exc.detail,
        )
        retry_at = time.monotonic() + delay
        self.metrics.failed(resource, exc, consecutive=failures, retry_at=retry_at)
        self.last_failure[resource] = failure_status(exc)
        fields = {
            "resource": resource.value,
            "status": exc.status,
            "error": exc.detail,
            "failures": failures,
            "retry_in_s": round(delay, 3),
        }
        if isinstance(exc, ForeignAnswer):
            log.error(
                "foreign_answer",
                hint="an answer that is not ingestd's answer to this batch (misrouted URL, "
                "proxy, captive portal?): not delivered, cursor kept, will retry",
                **fields,
            )
        elif isinstance(exc, PermanentDeliveryError):
            if exc.transport == "tls":
                log.error(
                    "tls_verify_failed",
                    hint="ingestd's TLS certificate cannot be verified: check PUSHER_CA_BUNDLE "
                    "and the host name in PUSHER_INGEST_URL; retrying at the backoff cap",
                    **fields,
                )
            else:
                cause = _permanent_cause(exc.status)
                log.error(
                    "batch_refused", cause=cause, hint="retrying at the backoff cap", **fields
                )
        else:
            log.warning("batch_not_delivered", hint="will retry", **fields)
        return retry_at

    def _uploaded_bytes(self, sent_bytes: int) -> None:
        """Count what went on the wire since the last call, and project the backlog's drain time
        under the upload cap from the bytes per row measured so far."""
        self.metrics.upload_bytes.inc(sent_bytes - self._uploaded)
        self._uploaded = sent_bytes
        state = self.state[BatchType.MEASUREMENTS]
        self.metrics.drain_seconds.set(
            drain_seconds(
                self.progress.backlog_rows,
                state.sent_bytes,
                state.shipped_rows,
                self.settings.max_upload_bytes_per_s,
            )
        )

    def status_text(self) -> str:
        """The STATUS= line: progress, each resource's last failure, and failing log output."""
        text = self.progress.status_text(self.state, self.last_failure)
        logs = log_output_failures()
        if logs.count:
            text += f"; log output failing x{logs.count} ({printable(logs.last_error or '', 80)})"
        return text
