"""When the pusher tries again, and how big its next batch is: every wait of the daemon comes
from `RetryPolicy.delay(event, failures)`, one table.

    event            what happened                                   wait before the next attempt
    ---------------  ----------------------------------------------  -----------------------------
    TRANSIENT        5xx, 408, timeout, connection error, an answer  full jitter: uniform in
                     that is not ingestd's (`ForeignAnswer`)          [0, min(cap, base·2^(n-1))]
    RETRY_LATER      429 or 503                                      min(Retry-After, cap) + uniform
                                                                     [0, jitter]; without a usable
                                                                     header as TRANSIENT
    PERMANENT        400, 401, 403, 404, other 4xx and 3xx, a TLS    the cap (never a tight loop)
                     certificate not verified, a full set over
                     ingestd's limit
    TOO_LARGE        ingestd's own 413 to a measurements batch:      0: at once, the next batch half
                     halved, or at one row quarantined               the size or past the row
    TOO_LARGE_BARE   a 413 without ingestd's answer (a proxy's       as TRANSIENT (the batch is
                     limit): halved, nothing quarantined             halved too)
    FORMAT_REFUSED   415 to a columnar batch: ingestd is older       0: at once, the same rows as
                                                                     gzip JSON
    DATABASE_LOST    the customer database unreachable or lost       full jitter from a base of
                                                                     min(base, 5 s): a restarted
                                                                     database is back within seconds
    UNEXPECTED       a tick ended by an error nothing expected       the cap
    CENTRAL_CHANGED  ingestd's answers name another central database uniform in [settle, 2·settle):
                     (`X-Database-Identity`: failover, restore):      then a reconciliation pass
                     the next reconciliation pass is brought forward  (gateways do not all ask at
                                                                      once)
    RECONCILE_FAILED a reconciliation pass failed (ingestd           min(interval, settle·2^(n-1))
                     unreachable, an older ingestd: 404)

`n` counts the failures in a row (a resource's `consecutive_failures` + 1; for the database the
connection attempts since the last session; for reconciliation the failed passes since the last
good one), base is PUSHER_BACKOFF_BASE_S, cap PUSHER_BACKOFF_CAP_S, jitter
PUSHER_RETRY_AFTER_JITTER_S, settle PUSHER_RECONCILE_SETTLE_S, interval
PUSHER_RECONCILE_INTERVAL_S. The schedule of a healthy daemon is not a retry and is not in the
table: the next tick after PUSHER_PUSH_INTERVAL_S, a backlog's next batch at once, the next
reconciliation pass an interval after the last good one (held back while a backlog drains, for
at most `settle` past its time). `event_of` says which event a `DeliveryError` is (see
`pusher.errors`).

Pure functions of their inputs (the random source is the policy's), so the table is tested
directly without sleeping; the bench's gateway simulators use the same policy.
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING

from pusher.errors import DeliveryError, PayloadTooLarge, PermanentDeliveryError, RetryLater

if TYPE_CHECKING:
    from pusher.settings import Settings

__all__ = [
    "DATABASE_BASE_MAX_S",
    "RETRY_AFTER_MAX_S",
    "RetryEvent",
    "RetryPolicy",
    "event_of",
    "exponential_delay",
    "grow_batch_size",
    "parse_http_date",
    "parse_retry_after",
    "retry_after_delay",
    "shrink_batch_size",
]


class RetryEvent(StrEnum):
    """What made a resource (or the whole daemon) wait; the rows of the module's table."""

    TRANSIENT = "transient"
    RETRY_LATER = "retry_later"
    PERMANENT = "permanent"
    TOO_LARGE = "too_large"
    TOO_LARGE_BARE = "too_large_bare"
    FORMAT_REFUSED = "format_refused"
    DATABASE_LOST = "database_lost"
    UNEXPECTED = "unexpected"
    CENTRAL_CHANGED = "central_changed"
    RECONCILE_FAILED = "reconcile_failed"


DATABASE_BASE_MAX_S = 5.0
"""The most the first waits after losing the customer database start from, whatever
PUSHER_BACKOFF_BASE_S says: a database restart is over in seconds, a minute's wait is not needed."""


def exponential_delay(failures: int, base_s: float, cap_s: float, rng: random.Random) -> float:
    """Full jitter: uniform in [0, min(cap, base * 2**(failures-1))] (AWS architecture blog)."""
    exponent = min(max(failures - 1, 0), 62)
    ceiling = min(cap_s, base_s * 2.0**exponent)
    return rng.uniform(0.0, ceiling)


RETRY_AFTER_MAX_S = 86_400.0
"""The most a Retry-After header is read as (a day); the daemon waits at most PUSHER_BACKOFF_CAP_S
of it in any case (`retry_after_delay`)."""

_DELTA_SECONDS = re.compile(r"[0-9]{1,12}")
_MAX_HEADER_CHARS = 64


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header, at most RETRY_AFTER_MAX_S: delta-seconds (ASCII
    digits only: `str.isdigit()` also takes '²' and '①') or an HTTP-date (a date in the past
    means 0); None if absent or unreadable, never an exception."""
    if value is None:
        return None
    text = value.strip()
    if not text or len(text) > _MAX_HEADER_CHARS:
        return None
    if _DELTA_SECONDS.fullmatch(text):
        return min(float(text), RETRY_AFTER_MAX_S)
    when = parse_http_date(text)
    if when is None:
        return None
    try:
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    except OverflowError:
        return None
    return min(max(0.0, seconds), RETRY_AFTER_MAX_S)


_IMF_FIXDATE = re.compile(
    r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), ([0-9]{2}) "
    r"(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) ([0-9]{4}) "
    r"([0-9]{2}):([0-9]{2}):([0-9]{2}) GMT"
)
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def parse_http_date(text: str) -> datetime | None:
    """An HTTP-date (RFC 9110 5.6.7) as an aware datetime; None if unreadable, never an
    exception. IMF-fixdate, the one form servers send (ingestd's `Date` on every answer), is read
    here; the obsolete forms go to email.utils, imported only then (with the email package,
    ~0.35 MiB a pusher that never sees one does not hold)."""
    fixed = _IMF_FIXDATE.fullmatch(text.strip())
    try:
        if fixed is not None:
            day, month, year, hour, minute, second = fixed.groups()
            return datetime(int(year), _MONTHS.index(month) + 1, int(day), int(hour),
                            int(minute), int(second), tzinfo=UTC)  # fmt: skip
        from email.utils import parsedate_to_datetime

        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def retry_after_delay(
    retry_after_s: float | None,
    *,
    failures: int,
    base_s: float,
    cap_s: float,
    jitter_s: float,
    rng: random.Random,
) -> float:
    """Wait what the server asked (capped), plus jitter so many pushers do not return at once;
    without a usable header fall back to the exponential schedule."""
    if retry_after_s is None:
        return exponential_delay(failures, base_s, cap_s, rng)
    return min(retry_after_s, cap_s) + rng.uniform(0.0, jitter_s)


def event_of(exc: DeliveryError, *, columnar: bool = False) -> RetryEvent:
    """The row of the table a failed delivery is; `columnar`: the batch was sent columnar (a 415
    to it is an older ingestd, not a wrong configuration)."""
    if isinstance(exc, RetryLater):
        return RetryEvent.RETRY_LATER
    if isinstance(exc, PayloadTooLarge):
        return RetryEvent.TOO_LARGE if exc.protocol else RetryEvent.TOO_LARGE_BARE
    if isinstance(exc, PermanentDeliveryError):
        if exc.status == 415 and columnar:
            return RetryEvent.FORMAT_REFUSED
        return RetryEvent.PERMANENT
    return RetryEvent.TRANSIENT


@dataclass(frozen=True)
class RetryPolicy:
    """The table above with its settings: `base_s`, `cap_s`, `jitter_s`, reconciliation's
    `settle_s` and `interval_s` (their defaults are the settings') and the random source (seeded
    in tests and benches for repeatable schedules)."""

    base_s: float
    cap_s: float
    jitter_s: float
    rng: random.Random = field(default_factory=random.Random, compare=False)
    settle_s: float = 60.0
    interval_s: float = 3600.0

    @classmethod
    def from_settings(cls, settings: Settings, rng: random.Random | None = None) -> RetryPolicy:
        return cls(
            settings.backoff_base_s,
            settings.backoff_cap_s,
            settings.retry_after_jitter_s,
            rng or random.Random(),
            settings.reconcile_settle_s,
            settings.reconcile_interval_s,
        )

    def delay(
        self, event: RetryEvent, failures: int, *, retry_after_s: float | None = None
    ) -> float:
        """Seconds to wait after the `failures`-th failure in a row of kind `event`;
        `retry_after_s` is what a 429/503 asked for (None: it did not say)."""
        match event:
            case RetryEvent.TRANSIENT | RetryEvent.TOO_LARGE_BARE:
                return exponential_delay(failures, self.base_s, self.cap_s, self.rng)
            case RetryEvent.RETRY_LATER:
                return retry_after_delay(
                    retry_after_s,
                    failures=failures,
                    base_s=self.base_s,
                    cap_s=self.cap_s,
                    jitter_s=self.jitter_s,
                    rng=self.rng,
                )
            case RetryEvent.PERMANENT | RetryEvent.UNEXPECTED:
                return self.cap_s
            case RetryEvent.TOO_LARGE | RetryEvent.FORMAT_REFUSED:
                return 0.0
            case RetryEvent.DATABASE_LOST:
                base = min(self.base_s, DATABASE_BASE_MAX_S)
                return exponential_delay(failures, base, self.cap_s, self.rng)
            case RetryEvent.CENTRAL_CHANGED:
                return self.settle_s * (1.0 + self.rng.random())
            case RetryEvent.RECONCILE_FAILED:
                exponent = min(max(failures - 1, 0), 62)
                return min(self.interval_s, self.settle_s * 2.0**exponent)

    def after(self, exc: DeliveryError, failures: int, *, columnar: bool = False) -> float:
        """`delay` for a failed delivery (its event and, for a 429/503, its Retry-After)."""
        retry_after_s = exc.retry_after_s if isinstance(exc, RetryLater) else None
        return self.delay(event_of(exc, columnar=columnar), failures, retry_after_s=retry_after_s)


def shrink_batch_size(size: int) -> int:
    """413: halve, down to one row."""
    return max(1, size // 2)


def grow_batch_size(size: int, configured: int) -> int:
    """After a success grow back by a quarter (at least one row), up to the configured size, so a
    size just under the server's limit is not doubled straight back over it."""
    return min(configured, max(size + 1, math.ceil(size * 1.25)))
