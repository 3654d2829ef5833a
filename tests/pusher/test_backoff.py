"""The retry schedule and batch sizing, as pure functions."""

from __future__ import annotations

import functools
import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

from hypothesis import given
from hypothesis import strategies as st
from pusher.errors import PermanentDeliveryError, RetryLater, TransientDeliveryError
from pusher.retry import (
    RETRY_AFTER_MAX_S,
    exponential_delay,
    failure_delay,
    grow_batch_size,
    parse_retry_after,
    retry_after_delay,
    shrink_batch_size,
)


def test_exponential_delay_is_full_jitter_doubling_to_the_cap() -> None:
    """The n-th consecutive failure waits uniformly in [0, min(cap, base * 2**(n-1))]."""
    rng = random.Random(1)
    for failures, ceiling in [(1, 60), (2, 120), (3, 240), (5, 960), (6, 1800), (40, 1800)]:
        delays = [exponential_delay(failures, 60, 1800, rng) for _ in range(500)]
        assert min(delays) >= 0 and max(delays) <= ceiling
        assert max(delays) > ceiling * 0.9 and min(delays) < ceiling * 0.1


def test_retry_after_accepts_seconds_and_http_dates() -> None:
    """Retry-After is read as delta-seconds or an HTTP-date; past dates mean 0, junk None."""
    now = datetime(2026, 11, 26, 10, 0, 0, tzinfo=UTC)
    assert parse_retry_after("120", now) == 120
    later = format_datetime(now + timedelta(seconds=90), usegmt=True)
    assert parse_retry_after(later, now) == 90
    earlier = format_datetime(now - timedelta(seconds=90), usegmt=True)
    assert parse_retry_after(earlier, now) == 0
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after(None, now) is None
    assert parse_retry_after("-5", now) is None


def test_retry_after_is_capped_and_jittered() -> None:
    """The server's wait is capped at the backoff cap and gets up to `jitter_s` added."""
    rng = random.Random(2)
    waits = [
        retry_after_delay(10_000, failures=1, base_s=60, cap_s=1800, jitter_s=2, rng=rng)
        for _ in range(100)
    ]
    assert all(1800 <= w <= 1802 for w in waits)
    fallback = retry_after_delay(None, failures=1, base_s=60, cap_s=1800, jitter_s=2, rng=rng)
    assert 0 <= fallback <= 60


def test_batch_size_halves_to_one_and_grows_back_gradually() -> None:
    """413 halves the size down to 1; each success grows it by a quarter up to the setting."""
    assert [shrink_batch_size(n) for n in (5000, 3, 2, 1)] == [2500, 1, 1, 1]
    size, steps = 1, 0
    while size < 5000:
        size = grow_batch_size(size, 5000)
        steps += 1
    assert size == 5000 and 25 <= steps <= 45
    assert grow_batch_size(2500, 5000) == 3125


def test_failure_delay_follows_the_protocols_retry_table() -> None:
    """429/503 wait what the server asked plus jitter, a wrong configuration waits the cap (never
    a tight loop), anything else the exponential schedule of its failure count."""
    delay = functools.partial(
        failure_delay, base_s=60.0, cap_s=1800.0, jitter_s=2.0, rng=random.Random(3)
    )
    assert 30 <= delay(RetryLater("HTTP 429", status=429, retry_after_s=30.0), failures=7) <= 32
    assert delay(PermanentDeliveryError("HTTP 401", status=401), failures=1) == 1800
    waits = [delay(TransientDeliveryError("HTTP 502", status=502), failures=2) for _ in range(200)]
    assert min(waits) >= 0 and 100 < max(waits) <= 120


def test_retry_after_reads_ascii_digits_and_real_dates_only() -> None:
    """Unicode digits ('²', '①', fullwidth), signs, fractions, absurd sizes and far-off or
    malformed dates are unreadable (None: the exponential schedule applies); readable values
    are capped at RETRY_AFTER_MAX_S; nothing raises."""
    now = datetime(2026, 11, 26, 10, 0, 0, tzinfo=UTC)
    for junk in ["²", "①", "٣", "\uff11\uff12", "-1", "+5", "1.5", "1e9", "NaN", "9" * 5000,
                 "Fri, 31 Dec 99999999999999999999 23:59:59 GMT", "Sat, 99 Foo 2026 99:99:99 GMT",
                 "\x00", "Sun, 06 Nov 1994 08:49:37 +9999"]:  # fmt: skip
        assert parse_retry_after(junk, now) is None, junk
    assert parse_retry_after("9" * 12, now) == RETRY_AFTER_MAX_S
    assert parse_retry_after("Fri, 31 Dec 9999 23:59:59 GMT", now) == RETRY_AFTER_MAX_S
    assert parse_retry_after("Mon, 01 Jan 0001 00:00:00 GMT", now) == 0


@given(st.text(max_size=80))
def test_retry_after_never_raises(value: str) -> None:
    """Whatever the header says, the answer is None or a number of seconds within the cap."""
    seconds = parse_retry_after(value)
    assert seconds is None or 0 <= seconds <= RETRY_AFTER_MAX_S
