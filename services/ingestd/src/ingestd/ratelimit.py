"""Token-bucket rate limits, in-process (each replica enforces its own share).

- `RateLimiter`: batches per second per customer (429 with Retry-After).
- `FailedAuthLimiter`: failed authentications per client address, so guessing tokens is slow.
  A client address over its budget gets 429 before its token is even looked up — unless the token
  it presents authenticated successfully in the last hour (kept as a hash, in memory), so a real
  customer behind the same address as an attacker (NAT) keeps pushing.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Hashable

__all__ = ["FailedAuthLimiter", "RateLimiter"]

_PRUNE_EVERY = 1024


class RateLimiter:
    """`rate` events per second with bursts of up to `burst`, per key."""

    def __init__(
        self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.burst = float(burst)
        self._clock = clock
        self._buckets: dict[Hashable, tuple[float, float]] = {}
        self._calls = 0

    def _level(self, key: Hashable, now: float) -> float:
        tokens, last = self._buckets.get(key, (self.burst, now))
        return min(self.burst, tokens + (now - last) * self.rate)

    def peek(self, key: Hashable) -> float:
        """0 when one event would be allowed now, else the seconds until it would be."""
        tokens = self._level(key, self._clock())
        return 0.0 if tokens >= 1.0 else (1.0 - tokens) / self.rate

    def acquire(self, key: Hashable) -> float:
        """Take one token; return 0 when allowed, else the seconds until one is available."""
        now = self._clock()
        tokens = self._level(key, now)
        self._prune(now)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            return 0.0
        self._buckets[key] = (tokens, now)
        return (1.0 - tokens) / self.rate

    def _prune(self, now: float) -> None:
        """Forget full buckets now and then, so many distinct keys cannot grow memory forever."""
        self._calls += 1
        if self._calls % _PRUNE_EVERY:
            return
        self._buckets = {k: v for k, v in self._buckets.items() if self._level(k, now) < self.burst}

    @staticmethod
    def retry_after(wait_s: float) -> int:
        """Whole seconds for a Retry-After header (at least 1)."""
        return max(1, math.ceil(wait_s))


class FailedAuthLimiter:
    """Failed authentications per client address, with a pass for recently good tokens."""

    def __init__(
        self,
        per_minute: float,
        burst: int,
        good_ttl_s: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._failures = RateLimiter(per_minute / 60.0, burst, clock)
        self._good: dict[bytes, float] = {}
        self._good_ttl_s = good_ttl_s
        self._clock = clock

    def wait(self, address: str, token_hash: bytes) -> float:
        """Seconds this address must wait before a token lookup (0: go ahead)."""
        expires = self._good.get(token_hash)
        if expires is not None and expires > self._clock():
            return 0.0
        return self._failures.peek(address)

    def failed(self, address: str) -> None:
        self._failures.acquire(address)

    def succeeded(self, token_hash: bytes) -> None:
        now = self._clock()
        if len(self._good) > 100_000:  # bounded: drop expired entries, then the oldest
            self._good = {h: e for h, e in self._good.items() if e > now}
            while len(self._good) > 100_000:
                self._good.pop(next(iter(self._good)))
        self._good[token_hash] = now + self._good_ttl_s

    def forget(self, token_hash: bytes) -> None:
        """A token that stopped working (revoked, expired) loses its pass."""
        self._good.pop(token_hash, None)
