"""Admission of batches past capacity: shed early and cheaply, and spread the retries.

At most INGESTD_MAX_INFLIGHT batches are inflated, parsed and stored at once (each holds one of
these slots while it does), and at most INGESTD_MAX_WAITING received bodies wait for a slot, each
for at most INGESTD_INFLIGHT_WAIT_S. A request that arrives while the waiting line is full is
answered 503 at once, before its token is looked up or its body read: past capacity, the
process spends its CPU on the batches it will store, not on batches it will refuse after the
work (no pool-timeout storms, goodput stays near capacity).

Every 503 carries a Retry-After spread at random over a window that widens with the overload
(`spread`): a herd of pushers that all retry after the same delay would arrive together again,
while spreading them over `base * (1 + load)` seconds turns a spike into a stream the process
can take. The pushers add their own jitter on top (PUSHER_RETRY_AFTER_JITTER_S).

One customer holds at most INGESTD_MAX_INFLIGHT_PER_CUSTOMER requests at once — from its token
being checked to its answer, waiting lines included (`customer_turn`): past that it is answered
429 with Retry-After, so one customer (a buggy gateway, a compromised token) cannot take every
slot and waiting place while the others are still served. A pusher sends one batch at a time.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from contextlib import contextmanager

from ingestd.errors import RateLimited, ServiceUnavailable

__all__ = ["Admission"]


class Admission:
    def __init__(
        self,
        inflight: int,
        waiting: int,
        wait_s: float,
        busy_retry_after_s: int,
        rng: random.Random | None = None,
        per_customer: int | None = None,
    ) -> None:
        self.max_inflight = inflight
        self.max_waiting = waiting
        self.wait_s = wait_s
        self.busy_retry_after_s = busy_retry_after_s
        self._slots = asyncio.Semaphore(inflight)
        self._waiting = 0
        self._rng = rng or random.Random()
        self.shed = 0
        self.per_customer = per_customer or inflight
        self._customers: dict[int, int] = {}

    @property
    def waiting(self) -> int:
        return self._waiting

    @property
    def load(self) -> float:
        """Waiting batches per slot: 0 when nothing waits."""
        return self._waiting / self.max_inflight

    def spread(self, base_s: int) -> int:
        """A Retry-After for one refused request: `base_s` plus a random share of a window that
        grows with the load (up to `base_s * (1 + load)`)."""
        return base_s + self._rng.randint(0, max(1, round(base_s * (1.0 + self.load))))

    def busy(self) -> ServiceUnavailable:
        self.shed += 1
        return ServiceUnavailable(self.spread(self.busy_retry_after_s), "busy, retry later")

    def check(self) -> None:
        """Refuse at once (503) when every slot is taken and the waiting line is full."""
        if self._slots.locked() and self._waiting >= self.max_waiting:
            raise self.busy()

    async def acquire(self) -> None:
        """Take a slot, waiting at most `wait_s` in a line of at most `max_waiting`; 503 past it."""
        if not self._slots.locked():
            await self._slots.acquire()
            return
        self.check()
        self._waiting += 1
        try:
            async with asyncio.timeout(self.wait_s):
                await self._slots.acquire()
        except TimeoutError:
            raise self.busy() from None
        finally:
            self._waiting -= 1

    def release(self) -> None:
        self._slots.release()

    @contextmanager
    def customer_turn(self, customer_id: int) -> Iterator[None]:
        """Count one request of this customer for as long as it lasts; 429 past the limit."""
        held = self._customers.get(customer_id, 0)
        if held >= self.per_customer:
            raise RateLimited(
                self.spread(self.busy_retry_after_s),
                f"this customer already has {held} requests in progress",
            )
        self._customers[customer_id] = held + 1
        try:
            yield
        finally:
            left = self._customers.pop(customer_id) - 1
            if left:
                self._customers[customer_id] = left
