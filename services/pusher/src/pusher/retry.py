"""When to try a resource again, and how big its next batch is.

Pure functions of their inputs (the random source and the clock are parameters), so the
protocol's retry table is tested directly without sleeping. `failure_delay` is that table:
which wait follows which kind of failed delivery (see `pusher.errors`).
"""

from __future__ import annotations

import math
import random
import re
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from pusher.errors import DeliveryError, PermanentDeliveryError, RetryLater

__all__ = [
    "RETRY_AFTER_MAX_S",
    "exponential_delay",
    "failure_delay",
    "grow_batch_size",
    "parse_retry_after",
    "retry_after_delay",
    "shrink_batch_size",
]


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
    try:
        when = parsedate_to_datetime(text)
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return min(max(0.0, seconds), RETRY_AFTER_MAX_S)


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


def failure_delay(
    exc: DeliveryError,
    *,
    failures: int,
    base_s: float,
    cap_s: float,
    jitter_s: float,
    rng: random.Random,
) -> float:
    """Seconds before the next attempt after the `failures`-th failure in a row: what a 429/503
    asked for, the backoff cap when the configuration is wrong (never a tight loop), otherwise
    the exponential schedule."""
    if isinstance(exc, RetryLater):
        return retry_after_delay(
            exc.retry_after_s,
            failures=failures,
            base_s=base_s,
            cap_s=cap_s,
            jitter_s=jitter_s,
            rng=rng,
        )
    if isinstance(exc, PermanentDeliveryError):
        return cap_s
    return exponential_delay(failures, base_s, cap_s, rng)


def shrink_batch_size(size: int) -> int:
    """413: halve, down to one row."""
    return max(1, size // 2)


def grow_batch_size(size: int, configured: int) -> int:
    """After a success grow back by a quarter (at least one row), up to the configured size, so a
    size just under the server's limit is not doubled straight back over it."""
    return min(configured, max(size + 1, math.ceil(size * 1.25)))
