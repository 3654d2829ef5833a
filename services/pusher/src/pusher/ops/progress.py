"""How far behind the central copy is: the backlog and lag gauges, kept cheap.

Rows behind the cursor are counted along the push index, stopping at `BACKLOG_COUNT_BOUND`
rows (the gauge then reads the bound: "at least"), and no more often than every
PUSHER_BACKLOG_COUNT_INTERVAL_S (30 s by default), at a tick. Between counts the figure goes
down by the rows shipped; rows written since the last count show up at the next one.

Lag is the newest timestamp stored locally minus the newest delivered: `received_at` for
measurements (0 when nothing is behind the cursor), `updated_at` for the sites and devices
full sets (0 once the current set is delivered). Before anything was delivered the oldest
undelivered timestamp stands in for "newest delivered", so lag is the span waiting to ship.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import UTC, datetime

from fleetcore.protocol import BatchType

from pusher.ops.metrics import PusherMetrics
from pusher.source import Backlog, FullSet
from pusher.state import PushState

__all__ = ["PushProgress", "measurement_lag_s"]

_MEASUREMENTS = BatchType.MEASUREMENTS


def _seconds(newer: datetime | None, older: datetime | None) -> float:
    if newer is None or older is None:
        return 0.0
    return max(0.0, (newer - older).total_seconds())


def measurement_lag_s(
    backlog_rows: int, newest_local: datetime | None, newest_shipped: datetime | None
) -> float:
    """Newest row stored locally minus newest delivered; 0 when nothing is behind the cursor."""
    if backlog_rows <= 0:
        return 0.0
    return _seconds(newest_local, newest_shipped)


class PushProgress:
    """Backlog and lag bookkeeping behind the gauges of `metrics`."""

    def __init__(self, metrics: PusherMetrics, count_interval_s: float) -> None:
        self.metrics = metrics
        self.count_interval_s = count_interval_s
        self.backlog_rows = 0
        self._counted_at = float("-inf")
        self._newest_shipped: dict[BatchType, datetime | None] = {}
        self._newest_local: datetime | None = None
        self._first_unshipped: datetime | None = None

    def restore(self, states: PushState) -> None:
        """Start from the stored state (a new session): the gauges that outlive a restart are
        set from it, and the next tick counts again."""
        self.metrics.retry_at.clear()
        for resource, state in states.items():
            self.metrics.consecutive_failures.labels(resource.value).set(state.consecutive_failures)
        self.metrics.batch_size.labels(_MEASUREMENTS.value).set(states[_MEASUREMENTS].batch_size)
        for resource, state in states.items():
            self._newest_shipped[resource] = (
                state.newest_shipped_received_at
                if resource is _MEASUREMENTS
                else state.last_success_at
            )
        self.recount()

    def recount(self) -> None:
        """Make the next `count_due` true (the cursor moved other than by shipping)."""
        self._counted_at = float("-inf")

    def count_due(self) -> bool:
        now = time.monotonic()
        if now - self._counted_at < self.count_interval_s:
            return False
        self._counted_at = now
        return True

    def counted(self, backlog: Backlog) -> None:
        self.backlog_rows = backlog.rows
        self._newest_local = backlog.newest_received_at
        self._first_unshipped = backlog.first_unshipped_received_at
        self._publish()

    def measurements_moved(self, rows: int, newest: datetime | None) -> None:
        """The cursor moved past `rows` rows (shipped, or one quarantined)."""
        if newest is not None:
            before = self._newest_shipped.get(_MEASUREMENTS)
            self._newest_shipped[_MEASUREMENTS] = max(before, newest) if before else newest
        self.backlog_rows = max(0, self.backlog_rows - rows)
        self._publish()

    def full_set(self, resource: BatchType, full: FullSet, *, delivered: bool) -> None:
        if delivered:
            self._newest_shipped[resource] = full.newest_updated_at
            lag = 0.0
        else:
            shipped = self._newest_shipped.get(resource) or full.oldest_updated_at
            lag = _seconds(full.newest_updated_at, shipped)
        self.metrics.lag_seconds.labels(resource.value).set(lag)

    @property
    def measurement_lag_s(self) -> float:
        shipped = self._newest_shipped.get(_MEASUREMENTS) or self._first_unshipped
        return measurement_lag_s(self.backlog_rows, self._newest_local, shipped)

    @property
    def oldest_unshipped_age_s(self) -> float:
        """How long the oldest row after the cursor has waited (its received_at); 0 when none."""
        if self.backlog_rows <= 0 or self._first_unshipped is None:
            return 0.0
        return _seconds(datetime.now(UTC), self._first_unshipped)

    def status_text(self, states: PushState, last_failure: Mapping[BatchType, str]) -> str:
        """One line for `systemctl status`: shipped, backlog, lag, and what is failing."""
        shipped = self.metrics.rows_shipped.get(_MEASUREMENTS.value)
        lag = self.measurement_lag_s
        text = f"{shipped:.0f} rows shipped, backlog {self.backlog_rows}, lag {lag:.0f}s"
        failing = [
            f"{resource.value} failing ({last_failure.get(resource, '?')}) "
            f"x{state.consecutive_failures}"
            for resource, state in states.items()
            if state.consecutive_failures
        ]
        return "; ".join([text, *failing])

    def _publish(self) -> None:
        self.metrics.backlog_rows.set(self.backlog_rows)
        self.metrics.lag_seconds.labels(_MEASUREMENTS.value).set(self.measurement_lag_s)
