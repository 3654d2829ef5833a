"""The in-process token cache on its own (the replicas' behaviour is in test_token_revocation)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from ingestd.auth import Customer
from ingestd.tokencache import TokenCache

ALICE = Customer(1, "ALICE")
HASH = bytes(range(32))


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _listening(ttl_s: float = 60.0, clock: Clock | None = None) -> TokenCache:
    cache = TokenCache(ttl_s, clock=clock or Clock())
    cache.start_trusting()
    return cache


def test_a_lookup_is_served_from_the_cache_until_its_token_is_announced_changed() -> None:
    """After a put the token is a hit; the notification carrying its hash removes it."""
    cache = _listening()
    cache.put(HASH, ALICE, None, cache.generation)
    assert cache.get(HASH) == ALICE
    cache.invalidate(HASH.hex())
    assert cache.get(HASH) is None


def test_nothing_is_cached_or_served_while_the_listener_is_down() -> None:
    """Without a live LISTEN connection a revocation could be missed: every request goes to the DB."""
    cache = TokenCache(60.0)
    cache.put(HASH, ALICE, None, cache.generation)
    assert cache.get(HASH) is None and len(cache) == 0
    cache.start_trusting()
    cache.put(HASH, ALICE, None, cache.generation)
    cache.stop_trusting()
    assert cache.get(HASH) is None and len(cache) == 0


def test_a_lookup_that_raced_a_change_is_not_cached() -> None:
    """A row read before a revocation was announced must not enter the cache after it."""
    cache = _listening()
    generation = cache.generation
    cache.invalidate(HASH.hex())  # the revocation lands while the lookup runs
    cache.put(HASH, ALICE, None, generation)
    assert cache.get(HASH) is None


def test_entries_end_with_the_ttl_and_with_the_tokens_expiry() -> None:
    """The staleness bound: no entry outlives ttl_s, nor the token's own expires_at."""
    clock = Clock()
    cache = _listening(ttl_s=30.0, clock=clock)
    cache.put(HASH, ALICE, None, cache.generation)
    clock.now += 31
    assert cache.get(HASH) is None
    cache.put(HASH, ALICE, datetime.now(UTC) - timedelta(seconds=1), cache.generation)
    assert cache.get(HASH) is None


def test_an_unreadable_payload_empties_the_whole_cache() -> None:
    """A notification that names no single token is treated as 'anything may have changed'."""
    cache = _listening()
    cache.put(HASH, ALICE, None, cache.generation)
    cache.invalidate("*")
    assert len(cache) == 0
