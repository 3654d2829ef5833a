"""The upload cap for metered links (PUSHER_MAX_UPLOAD_BYTES_PER_S): a token bucket.

Tokens are bytes, refilled at the cap per second up to one second's worth. A request takes its
size in tokens before it is sent and waits while the bucket is short; a request larger than the
bucket may drive it below zero (it is never split: batches are the protocol's unit) and the
requests after it wait until the debt is paid back. Over any stretch of time the bytes sent stay
within the cap plus one second's worth.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

__all__ = ["UploadCap", "drain_seconds"]


class UploadCap:
    """`rate` bytes per second; `clock` and `sleep` are swappable for tests."""

    def __init__(
        self,
        rate: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if rate <= 0:
            raise ValueError("an upload cap must be a positive number of bytes per second")
        self.rate = rate
        self._clock = clock
        self._sleep = sleep
        self._tokens = float(rate)
        self._updated = clock()
        self.waited_s = 0.0

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(float(self.rate), self._tokens + (now - self._updated) * self.rate)
        self._updated = now

    def wait_s(self) -> float:
        """How long a request would wait now (0: it may go)."""
        self._refill()
        return 0.0 if self._tokens > 0 else -self._tokens / self.rate

    async def take(self, size: int) -> None:
        """Wait until the bucket is not empty, then take `size` bytes from it."""
        while (delay := self.wait_s()) > 0:
            self.waited_s += delay
            await self._sleep(delay)
        self._tokens -= size


def drain_seconds(backlog_rows: int, sent_bytes: int, shipped_rows: int, cap: int) -> float:
    """Projected time to send `backlog_rows` under `cap` bytes/s, at the bytes per row sent so
    far (0 without a cap, a backlog or any history to go by)."""
    if cap <= 0 or backlog_rows <= 0 or shipped_rows <= 0:
        return 0.0
    return backlog_rows * (sent_bytes / shipped_rows) / cap
