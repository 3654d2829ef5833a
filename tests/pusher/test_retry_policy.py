"""The retry policy (one table for every wait of the pusher) and batch sizing, as pure functions;
and that no other module chooses a wait."""

from __future__ import annotations

import ast
import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import pusher
import pytest
from pusher.errors import (
    ForeignAnswer,
    PayloadTooLarge,
    PermanentDeliveryError,
    RetryLater,
    TransientDeliveryError,
)
from pusher.retry import (
    RetryEvent,
    RetryPolicy,
    event_of,
    exponential_delay,
    grow_batch_size,
    parse_http_date,
    parse_retry_after,
    retry_after_delay,
    shrink_batch_size,
)

PACKAGE = Path(pusher.__file__).parent
ROOT = PACKAGE.parents[3]


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


def test_http_dates_are_read_in_all_three_forms() -> None:
    """An HTTP-date reads the same as IMF-fixdate (what servers send), RFC 850 or asctime (the
    obsolete forms), an impossible date or junk as None."""
    when = datetime(1994, 11, 6, 8, 49, 37, tzinfo=UTC)
    assert parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT") == when
    assert parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT") == when
    assert parse_http_date("Sun Nov  6 08:49:37 1994") == when
    assert parse_http_date(format_datetime(when, usegmt=True)) == when
    for junk in ("Sun, 31 Feb 1994 08:49:37 GMT", "Sun, 06 Nov 1994 25:49:37 GMT", "", "soon"):
        assert parse_http_date(junk) is None, junk


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


def _policy(seed: int) -> RetryPolicy:
    return RetryPolicy(base_s=60.0, cap_s=1800.0, jitter_s=2.0, rng=random.Random(seed))


# event, failures, retry_after_s, lowest and highest wait (base 60, cap 1800, jitter 2; settle 60,
# interval 3600: the settings' defaults)
TABLE = [
    (RetryEvent.TRANSIENT, 1, None, 0.0, 60.0),
    (RetryEvent.TRANSIENT, 3, None, 0.0, 240.0),
    (RetryEvent.TRANSIENT, 40, None, 0.0, 1800.0),
    (RetryEvent.RETRY_LATER, 7, 30.0, 30.0, 32.0),
    (RetryEvent.RETRY_LATER, 1, 10_000.0, 1800.0, 1802.0),
    (RetryEvent.RETRY_LATER, 2, None, 0.0, 120.0),
    (RetryEvent.PERMANENT, 1, None, 1800.0, 1800.0),
    (RetryEvent.PERMANENT, 9, None, 1800.0, 1800.0),
    (RetryEvent.TOO_LARGE, 1, None, 0.0, 0.0),
    (RetryEvent.TOO_LARGE_BARE, 2, None, 0.0, 120.0),
    (RetryEvent.FORMAT_REFUSED, 1, None, 0.0, 0.0),
    (RetryEvent.DATABASE_LOST, 1, None, 0.0, 5.0),
    (RetryEvent.DATABASE_LOST, 4, None, 0.0, 40.0),
    (RetryEvent.UNEXPECTED, 1, None, 1800.0, 1800.0),
    (RetryEvent.CENTRAL_CHANGED, 1, None, 60.0, 120.0),
    (RetryEvent.RECONCILE_FAILED, 1, None, 60.0, 60.0),
    (RetryEvent.RECONCILE_FAILED, 3, None, 240.0, 240.0),
    (RetryEvent.RECONCILE_FAILED, 30, None, 3600.0, 3600.0),
]


@pytest.mark.parametrize(("event", "failures", "retry_after_s", "low", "high"), TABLE)
def test_policy_follows_its_table(
    event: RetryEvent, failures: int, retry_after_s: float | None, low: float, high: float
) -> None:
    """Each row of the policy's table waits within its bounds, and a random wait spreads over
    them (full jitter reaches near both ends)."""
    policy = _policy(failures)
    waits = [policy.delay(event, failures, retry_after_s=retry_after_s) for _ in range(400)]
    assert low <= min(waits) and max(waits) <= high
    if high - low > 10:
        assert min(waits) < low + (high - low) * 0.1 and max(waits) > high - (high - low) * 0.1


def test_every_event_is_in_the_table_docstring_and_operations() -> None:
    """Every event has a row in the table test above, in `pusher.retry`'s docstring and in
    docs/OPERATIONS.md, so the three cannot drift."""
    import pusher.retry

    operations = (ROOT / "docs" / "OPERATIONS.md").read_text()
    for event in RetryEvent:
        assert event in {row[0] for row in TABLE}
        assert f"    {event.name} " in (pusher.retry.__doc__ or "")
        assert f"| `{event.name}` |" in operations


def test_failures_map_to_their_events() -> None:
    """429/503 wait what the server asked plus jitter, a wrong configuration waits the cap (never
    a tight loop), a 415 to a columnar batch is an older ingestd, anything else the exponential
    schedule of its failure count."""
    policy = _policy(3)
    assert 30 <= policy.after(RetryLater("HTTP 429", status=429, retry_after_s=30.0), 7) <= 32
    assert policy.after(PermanentDeliveryError("HTTP 401", status=401), 1) == 1800
    waits = [policy.after(TransientDeliveryError("HTTP 502", status=502), 2) for _ in range(200)]
    assert min(waits) >= 0 and 100 < max(waits) <= 120
    refused = PermanentDeliveryError("HTTP 415", status=415)
    assert event_of(refused, columnar=True) is RetryEvent.FORMAT_REFUSED
    assert event_of(refused) is RetryEvent.PERMANENT
    assert event_of(ForeignAnswer("HTTP 204", status=204)) is RetryEvent.TRANSIENT
    own = PayloadTooLarge("HTTP 413", max_bytes=10, protocol=True)
    assert event_of(own) is RetryEvent.TOO_LARGE
    bare = PayloadTooLarge("HTTP 413", max_bytes=None, protocol=False)
    assert event_of(bare) is RetryEvent.TOO_LARGE_BARE


_POLICY_NAMES = {
    "backoff_base_s",
    "backoff_cap_s",
    "retry_after_jitter_s",
    "retry_after_s",
    "exponential_delay",
    "retry_after_delay",
    "DATABASE_BASE_MAX_S",
    "reconcile_settle_s",
    "uniform",
}
"""What choosing a wait needs: the backoff settings, a Retry-After, the schedule's functions, a
random draw. Outside the policy only settings.py (which reads them) and errors.py (which carries
a Retry-After) may name them."""


def _delay_sources() -> list[str]:
    """Every place in the pusher that asks the policy for a wait: `module: event` (`after` takes
    the event of a failed delivery: `event_of`)."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
                continue
            if node.func.attr == "delay" and ast.unparse(node.func.value).endswith("policy"):
                found.append(f"{module}: {ast.unparse(node.args[0]).removeprefix('RetryEvent.')}")
            elif node.func.attr == "after" and ast.unparse(node.func.value).endswith("policy"):
                found.append(f"{module}: after(exc)")
    return found


def test_every_wait_comes_from_the_policy() -> None:
    """No pusher module but the policy names a backoff setting, a Retry-After or the schedule's
    functions, and the places that ask the policy are exactly these (a new wait is added here
    and to the table, or it fails)."""
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name in ("retry.py", "settings.py", "errors.py"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            name = node.attr if isinstance(node, ast.Attribute) else getattr(node, "id", None)
            if name in _POLICY_NAMES:
                offenders.append(f"{path.relative_to(PACKAGE)}:{node.lineno}: {name}")
    assert offenders == []
    assert sorted(_delay_sources()) == [
        "pusher.daemon: DATABASE_LOST",
        "pusher.daemon: UNEXPECTED",
        "pusher.outcomes: FORMAT_REFUSED",
        "pusher.outcomes: TOO_LARGE",
        "pusher.outcomes: TOO_LARGE_BARE",
        "pusher.outcomes: after(exc)",
        "pusher.reconcile.schedule: CENTRAL_CHANGED",
        "pusher.reconcile.schedule: RECONCILE_FAILED",
    ]
