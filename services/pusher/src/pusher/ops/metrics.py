"""The pusher's Prometheus metrics (the listener that serves them is `scrape.py`).

Every `Pusher` owns a `Registry` of its own (`prom.py`: the pusher's own small implementation,
not prometheus_client, whose imports cost a gateway ~2.6 MiB), so several pushers can run in one
process (the tests do) without sharing series. The listener is
off unless PUSHER_METRICS_PORT is set; it binds PUSHER_METRICS_HOST (127.0.0.1 by default) and
serves `GET /metrics` only, from the daemon's own event loop (text 0.0.4 or OpenMetrics as the
scraper asks, gzip when accepted). No `_created` series.

The names below are a contract with alert rules; change them only together.

    fleet_pusher_rows_shipped_total{resource}            rows in batches ingestd answered 2xx
    fleet_pusher_batches_total{resource,outcome}         every batch sent, by outcome: ok,
        rejected_rows, client_error, rate_limited, unavailable, server_error, network_error,
        too_large, foreign_answer (a 2xx that is not ingestd's answer to the batch)
    fleet_pusher_rejected_rows_total{resource}           rows ingestd refused (its dead-letter)
    fleet_pusher_failures_total{resource,status}         batches not delivered, by HTTP status,
                                                         or timeout / connection / tls
    fleet_pusher_consecutive_failures{resource}          failures since the last delivery
    fleet_pusher_backoff_seconds{resource}               time until the next attempt; 0 when due
    fleet_pusher_batch_size{resource}                    rows asked per measurements batch (it
                                                         halves on 413); rows of the last full set
    fleet_pusher_backlog_rows                            measurements after the cursor (bounded
                                                         count, see `progress.py`)
    fleet_pusher_lag_seconds{resource}                   newest timestamp stored locally minus
                                                         newest delivered; 0 when caught up
    fleet_pusher_blocking_transaction_age_seconds        the long-open transaction holding the
                                                         cursor back; 0 when none
    fleet_pusher_quarantined_rows_total                  rows refused even alone, kept locally
    fleet_pusher_cursor_resets_total                     cursor restarted (restored database)
    fleet_pusher_restamped_rows_total                    rows restamped (restored database)
    fleet_pusher_database_errors_total                   customer database connection losses
    fleet_pusher_unexpected_errors_total                 ticks ended by an unexpected error
                                                         (logged with its cause, retried at the
                                                         backoff cap, cursor kept)
    fleet_pusher_uncarriable_rows_total                  rows whose time or received_at the
                                                         protocol cannot carry, quarantined locally
    fleet_pusher_log_write_errors_total                  log lines dropped: stdout unwritable
                                                         (full disk, closed pipe) or unrenderable
    fleet_pusher_reconcile_passes_total{result}          reconciliation passes: in_sync, repaired,
                                                         failed (`pusher.reconcile.metrics`)
    fleet_pusher_reconcile_rows_resent_total             rows re-sent as repair batches
    fleet_pusher_reconcile_rows_restored_total           of those, rows the centre stored again
    fleet_pusher_reconcile_cells_repaired_total          device-hours re-sent
    fleet_pusher_reconcile_bytes_total{direction}        digests and repairs, sent / received
    fleet_pusher_reconcile_last_pass_timestamp_seconds   when the last pass ended
    fleet_pusher_reconcile_known_differences             device-hours known to differ (deleted here)
    fleet_pusher_central_identity_changes_total          central database changed (failover, restore)
    fleet_build_info{service,version}                    1, labelled with the running version
    process_*                                            CPU, memory, file descriptors, start time
    fleet_pusher_upload_bytes_total                      bytes sent to ingestd (headers included)
    fleet_pusher_upload_cap_bytes_per_second             PUSHER_MAX_UPLOAD_BYTES_PER_S (0: none)
    fleet_pusher_backlog_drain_seconds                   backlog x bytes per row / cap (0: no cap)

No label ever carries a token, a URL or an error text: label values come from closed sets.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping

from fleetcore.protocol import BatchType
from fleetservice import log_output_failures

from pusher.errors import DeliveryError, ForeignAnswer
from pusher.ops.prom import Counter, Family, Gauge, Info, Registry, process_families
from pusher.versions import pusher_version

__all__ = ["OUTCOMES", "PusherMetrics", "failure_status", "outcome_of"]

OUTCOMES = (
    "ok",
    "rejected_rows",
    "client_error",
    "rate_limited",
    "unavailable",
    "server_error",
    "network_error",
    "too_large",
    "foreign_answer",
)


def outcome_of(exc: DeliveryError) -> str:
    """The `outcome` label of a batch ingestd did not take."""
    status = exc.status
    if isinstance(exc, ForeignAnswer):
        return "foreign_answer"
    if status == 413:
        return "too_large"
    if status is None or status == 408:
        return "network_error"  # no usable answer: timeout, connection, TLS
    if status == 429:
        return "rate_limited"
    if status == 503:
        return "unavailable"
    if status >= 500:
        return "server_error"
    return "client_error"


def failure_status(exc: DeliveryError) -> str:
    """The `status` label: the HTTP status, or what failed below HTTP."""
    return str(exc.status) if exc.status is not None else exc.transport or "network"


def _backoff(retry_at: Mapping[str, float]) -> Iterator[Family]:
    """`fleet_pusher_backoff_seconds`, computed at scrape time from each resource's retry time."""
    family = Family(
        "fleet_pusher_backoff_seconds",
        "Seconds until the next attempt of a resource in backoff; 0 when due.",
        "gauge",
    )
    now = time.monotonic()
    for resource in BatchType:
        until = retry_at.get(resource.value, 0.0)
        family.add([("resource", resource.value)], max(0.0, until - now))
    yield family


def _log_output() -> Iterator[Family]:
    """`fleet_pusher_log_write_errors_total`, read from the process's logging at scrape time."""
    family = Family(
        "fleet_pusher_log_write_errors",
        "Log lines dropped because stdout could not be written (full disk, closed pipe) "
        "or the line could not be rendered.",
        "counter",
    )
    family.add((), log_output_failures().count)
    yield family


class PusherMetrics:
    """The series of one pusher, in a registry of its own. Every resource's series exist from
    the start (at 0), so `rate()` and absence alerts work before the first failure."""

    def __init__(self) -> None:
        self.registry = Registry()
        r = self.registry
        r.register(process_families)
        Info("fleet_build", "The running Fleet service and its version.", registry=r).info(
            {"service": "pusher", "version": pusher_version()}
        )
        self.rows_shipped = Counter(
            "fleet_pusher_rows_shipped",
            "Rows in batches ingestd answered with 2xx.",
            ["resource"],
            registry=r,
        )
        self.batches = Counter(
            "fleet_pusher_batches",
            "Batches sent to ingestd, by outcome.",
            ["resource", "outcome"],
            registry=r,
        )
        self.rejected_rows = Counter(
            "fleet_pusher_rejected_rows",
            "Rows ingestd refused in a 2xx answer (kept in its dead-letter table).",
            ["resource"],
            registry=r,
        )
        self.failures = Counter(
            "fleet_pusher_failures",
            "Batches not delivered, by HTTP status or by timeout, connection or tls.",
            ["resource", "status"],
            registry=r,
        )
        self.consecutive_failures = Gauge(
            "fleet_pusher_consecutive_failures",
            "Failed attempts since the resource's last delivery.",
            ["resource"],
            registry=r,
        )
        self.batch_size = Gauge(
            "fleet_pusher_batch_size",
            "Rows per measurements batch (halved on 413, grown back after successes); "
            "rows of the last full set for sites and devices.",
            ["resource"],
            registry=r,
        )
        self.backlog_rows = Gauge(
            "fleet_pusher_backlog_rows",
            "Measurements after the push cursor (a bounded count, refreshed periodically).",
            registry=r,
        )
        self.lag_seconds = Gauge(
            "fleet_pusher_lag_seconds",
            "Newest timestamp stored locally minus newest delivered; 0 when caught up.",
            ["resource"],
            registry=r,
        )
        self.blocking_transaction_age = Gauge(
            "fleet_pusher_blocking_transaction_age_seconds",
            "Age of the long-open transaction holding the cursor back; 0 when none.",
            registry=r,
        )
        self.quarantined_rows = Counter(
            "fleet_pusher_quarantined_rows",
            "Rows ingestd refused even alone (413), kept in app.fleet_push_quarantine.",
            registry=r,
        )
        self.cursor_resets = Counter(
            "fleet_pusher_cursor_resets",
            "Cursor restarts after finding it beyond the server's xid counter (restored database).",
            registry=r,
        )
        self.restamped_rows = Counter(
            "fleet_pusher_restamped_rows",
            "Rows restamped because their stamp lay beyond the server's xid counter.",
            registry=r,
        )
        self.database_errors = Counter(
            "fleet_pusher_database_errors",
            "Times the customer database could not be reached or the connection was lost.",
            registry=r,
        )
        self.unexpected_errors = Counter(
            "fleet_pusher_unexpected_errors",
            "Ticks ended by an unexpected error (logged with its cause, retried at the backoff "
            "cap with the cursor kept).",
            registry=r,
        )
        self.uncarriable_rows = Counter(
            "fleet_pusher_uncarriable_rows",
            "Rows whose time or received_at the protocol cannot carry, quarantined locally.",
            registry=r,
        )
        self.upload_bytes = Counter(
            "fleet_pusher_upload_bytes",
            "Bytes sent to ingestd: bodies as sent plus the request headers.",
            registry=r,
        )
        self.upload_cap = Gauge(
            "fleet_pusher_upload_cap_bytes_per_second",
            "PUSHER_MAX_UPLOAD_BYTES_PER_S; 0 when there is no cap.",
            registry=r,
        )
        self.drain_seconds = Gauge(
            "fleet_pusher_backlog_drain_seconds",
            "Projected time to send the backlog under the upload cap (backlog rows x bytes per "
            "row sent so far / cap); 0 without a cap or a backlog.",
            registry=r,
        )
        self.retry_at: dict[str, float] = {}
        r.register(lambda: _backoff(self.retry_at))
        r.register(_log_output)
        for resource in BatchType:
            for metric in (
                self.rows_shipped,
                self.rejected_rows,
                self.consecutive_failures,
                self.batch_size,
                self.lag_seconds,
            ):
                metric.labels(resource.value)
            for outcome in OUTCOMES:
                self.batches.labels(resource.value, outcome)

    def delivered(self, resource: BatchType, rows: int, rejected: int) -> None:
        r = resource.value
        self.batches.labels(r, "rejected_rows" if rejected else "ok").inc()
        self.rows_shipped.labels(r).inc(rows)
        self.rejected_rows.labels(r).inc(rejected)
        self.consecutive_failures.labels(r).set(0)
        self.retry_at.pop(r, None)

    def failed(
        self, resource: BatchType, exc: DeliveryError, *, consecutive: int, retry_at: float
    ) -> None:
        """A batch not delivered; `retry_at` is the monotonic time of the next attempt."""
        r = resource.value
        self.batches.labels(r, outcome_of(exc)).inc()
        self.failures.labels(r, failure_status(exc)).inc()
        self.consecutive_failures.labels(r).set(consecutive)
        if retry_at > time.monotonic():
            self.retry_at[r] = retry_at

    def value(self, name: str, **labels: str) -> float:
        """The sum of the samples named `name` whose labels include `labels` (0 when none)."""
        total = 0.0
        for family in self.registry.collect():
            for sample in family.samples:
                if sample.name == name and labels.items() <= dict(sample.labels).items():
                    total += sample.value
        return total

    def summary(self) -> dict[str, int]:
        """The counters worth a line when the daemon stops (whole counts: `sites_rows: 2`)."""
        out: dict[str, int] = {}
        for resource in BatchType:
            out[f"{resource.value}_rows"] = int(
                self.value("fleet_pusher_rows_shipped_total", resource=resource.value)
            )
            out[f"{resource.value}_failures"] = int(
                self.value("fleet_pusher_failures_total", resource=resource.value)
            )
        for name in (
            "quarantined_rows",
            "uncarriable_rows",
            "cursor_resets",
            "restamped_rows",
            "database_errors",
            "unexpected_errors",
            "log_write_errors",
        ):
            out[name] = int(self.value(f"fleet_pusher_{name}_total"))
        return {k: v for k, v in out.items() if v}
