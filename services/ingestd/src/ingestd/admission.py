"""Admission of batches past capacity: shed early and cheaply, and spread the retries.

At most INGESTD_MAX_INFLIGHT batches are inflated, parsed and stored at once (each holds one of
these slots while it does), and received bodies wait for a slot in a line, each for at most
INGESTD_INFLIGHT_WAIT_S. The line holds as many batches as the process completes in that time at
its measured capacity (below), at least INGESTD_MAX_WAITING and at most MAX_LINE: a batch
arriving behind a full line would not get a slot in time anyway, so it is answered 503 at once,
before its token is looked up or its body read — past capacity, the process spends its CPU on
the batches it will store, not on batches it will refuse after the work (no pool-timeout storms,
goodput stays near capacity). A line of a fixed 32 (4 x 8 slots) was a fifth of a second of a
10,000-gateway fleet's arrivals: any stall that long (a collection, a database burst) refused
batches that would have been served within the wait, and booked them minutes ahead (issue 26).

A batch refused for capacity (`busy`) is given a time to come back (`ReturnSchedule`): the
refusals are booked one after another at a quarter (RETURN_SHARE) of the rate this process
completes batches while every slot is taken, each Retry-After the wait until its booked time (at
least INGESTD_BUSY_RETRY_AFTER_S, at most INGESTD_BUSY_RETRY_AFTER_MAX_S). A herd refused at once
(every gateway's first tick, full sets included, after a deployment) thus comes back as a stream
the process can take beside its regular traffic, instead of all within a few seconds to be
refused again and again: the last session's 10,000-gateway warm-up, spread over
`base * (1 + waiting/slots)` s (2-12 s), was refused 72 k times in ten minutes and never drained.
Other 503s and 429s (the database unreachable, the memory or decode budget, one customer's
requests) keep the random `spread` over `base * (1 + load)` s. The pushers add their own jitter
on top (PUSHER_RETRY_AFTER_JITTER_S).

One customer holds at most INGESTD_MAX_INFLIGHT_PER_CUSTOMER requests at once — from its token
being checked to its answer, waiting lines included (`customer_turn`): past that it is answered
429 with Retry-After, so one customer (a buggy gateway, a compromised token) cannot take every
slot and waiting place while the others are still served. A pusher sends one batch at a time.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from ingestd.errors import RateLimited, ServiceUnavailable

__all__ = ["MAX_LINE", "REFUSAL_REASONS", "RETURN_SHARE", "Admission", "ReturnSchedule"]

REFUSAL_REASONS = ("line_full", "wait_timeout")
"""Why a batch was refused for capacity: the waiting line was full when it arrived, or it waited
INGESTD_INFLIGHT_WAIT_S for a slot in vain."""

RETURN_SHARE = 0.25
"""Of the process's capacity, the share booked for refused batches coming back: the rest is for
the regular traffic (a fleet carried at up to ~3/4 of capacity drains a herd without refusing
its returns again)."""
MAX_LINE = 1024
"""The longest waiting line whatever the measured capacity (the memory budget bounds the bodies'
bytes on its own)."""
_SMOOTHING = 0.05  # weight of one new interval between completions in the moving average


class ReturnSchedule:
    """Booked return times of refused batches, at RETURN_SHARE of the measured capacity.

    Capacity is measured where it shows: while every slot is taken, the interval between two
    batches finishing (a moving average); until then one slot's worth per second is assumed.
    A refusal at `now` is booked at the later of `now + base_s` and the last booking plus one
    interval at the booking rate; past `max_s` the books are full and it is spread at random
    over [base_s, max_s] instead. Integer Retry-Afters are rounded up or down at random in
    proportion, so those booked within one second do not all come back at its start."""

    def __init__(
        self,
        slots: int,
        max_s: int,
        rng: random.Random,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_s = max_s
        self._rng = rng
        self._clock = clock
        self._interval = 1.0 / slots  # seconds between completions at capacity: a first guess
        self._last_done: float | None = None
        self._next = 0.0

    @property
    def capacity_per_s(self) -> float:
        return 1.0 / self._interval

    def booked_ahead_s(self) -> float:
        """How far ahead of now the next free return time is (0: nothing booked ahead)."""
        return max(0.0, self._next - self._clock())

    def completed(self, saturated: bool) -> None:
        """One batch gave its slot back; `saturated`: every slot was taken until then."""
        now = self._clock()
        if saturated and self._last_done is not None:
            self._interval += _SMOOTHING * (max(now - self._last_done, 1e-6) - self._interval)
        self._last_done = now if saturated else None

    def book(self, base_s: int) -> int:
        """Seconds until a batch refused now should come back (its Retry-After)."""
        now = self._clock()
        at = max(self._next, now + base_s)
        if at - now > self.max_s:
            return self._rng.randint(base_s, max(base_s, self.max_s))
        self._next = at + self._interval / RETURN_SHARE
        return max(base_s, math.floor(at - now + self._rng.random()))


class Admission:
    def __init__(
        self,
        inflight: int,
        waiting: int,
        wait_s: float,
        busy_retry_after_s: int,
        rng: random.Random | None = None,
        per_customer: int | None = None,
        busy_retry_after_max_s: int = 900,
        clock: Callable[[], float] = time.monotonic,
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
        self.returns = ReturnSchedule(inflight, busy_retry_after_max_s, self._rng, clock)
        self.refused = dict.fromkeys(REFUSAL_REASONS, 0)

        self.in_use = 0  # slots taken now

    @property
    def waiting(self) -> int:
        return self._waiting

    @property
    def line(self) -> int:
        """How many received batches may wait for a slot now: what the measured capacity completes
        in `wait_s`, at least `max_waiting`, at most MAX_LINE."""
        fits = int(self.returns.capacity_per_s * self.wait_s)
        return max(self.max_waiting, min(MAX_LINE, fits))

    @property
    def load(self) -> float:
        """Waiting batches per slot: 0 when nothing waits."""
        return self._waiting / self.max_inflight

    def spread(self, base_s: int) -> int:
        """A Retry-After for one refused request: `base_s` plus a random share of a window that
        grows with the load (up to `base_s * (1 + load)`)."""
        return base_s + self._rng.randint(0, max(1, round(base_s * (1.0 + self.load))))

    def busy(self, reason: str) -> ServiceUnavailable:
        """The 503 of a batch refused for capacity, with its booked return (`ReturnSchedule`);
        `reason` (one of REFUSAL_REASONS) is counted for the metrics."""
        self.shed += 1
        self.refused[reason] += 1
        return ServiceUnavailable(self.returns.book(self.busy_retry_after_s), "busy, retry later")

    def check(self) -> None:
        """Refuse at once (503) when every slot is taken and the waiting line is full."""
        if self._slots.locked() and self._waiting >= self.line:
            raise self.busy("line_full")

    async def acquire(self) -> None:
        """Take a slot, waiting at most `wait_s` in a line of at most `max_waiting`; 503 past it."""
        if not self._slots.locked():
            await self._slots.acquire()
            self.in_use += 1
            return
        self.check()
        self._waiting += 1
        try:
            async with asyncio.timeout(self.wait_s):
                await self._slots.acquire()
        except TimeoutError:
            raise self.busy("wait_timeout") from None
        finally:
            self._waiting -= 1
        self.in_use += 1

    def release(self) -> None:
        self.returns.completed(saturated=self._slots.locked())
        self.in_use -= 1
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
