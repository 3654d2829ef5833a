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
refusals are booked into the seconds ahead at a share (INGESTD_BUSY_RETURN_SHARE) of the rate
this process completes batches while every slot is taken, each Retry-After the wait until its
booked second (at least INGESTD_BUSY_RETRY_AFTER_S, at most INGESTD_BUSY_RETRY_AFTER_MAX_S). A
herd refused at once (every gateway's first tick, full sets included, after a deployment) thus
comes back as a stream the process can take beside its regular traffic, instead of all within a
few seconds to be refused again and again: an earlier 10,000-gateway warm-up, spread over
`base * (1 + waiting/slots)` s (2-12 s), was refused 72 k times in ten minutes and never drained.
The share is what the herd's drain costs the regular traffic: at a quarter, a 10,000-gateway
warm-up's returns (~2,300 a minute beside 10,000 batches) held the p99 at 275-429 ms for nine
minutes, against 35 ms without them (issue 26).
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

RETURN_SHARE = 0.1
"""Of the process's capacity, the share booked for refused batches coming back by default
(INGESTD_BUSY_RETURN_SHARE): the rest is for the regular traffic (a fleet carried at up to ~9/10
of capacity drains a herd without refusing its returns again). A herd of H refusals takes
H / (share x capacity) s to come back."""
MAX_LINE = 1024
"""The longest waiting line whatever the measured capacity (the memory budget bounds the bodies'
bytes on its own)."""
_SMOOTHING = 0.05  # weight of one new interval between completions in the moving average


class ReturnSchedule:
    """Booked return times of refused batches, at `share` of the measured capacity.

    Capacity is measured where it shows: while every slot is taken, the interval between two
    batches finishing (a moving average); until then one slot's worth per second is assumed.
    The books are a calendar of whole seconds, each holding its share of the booking rate (`share`
    x capacity a second, the fractions carried from second to second): a refusal at `now` is
    booked into the first second from `now + base_s` with room left, and its Retry-After is the
    whole seconds until then (returns booked into one second come back at the fractions of the
    seconds they were refused at). A second's room is counted at the capacity measured when a
    refusal is booked, so when the measure grows — the first guess is low, and a herd refused at
    a process's start is booked while it is measured — later refusals fill the room the early
    seconds were left with, instead of queueing behind bookings made at the first guess (a
    3,000-gateway warm-up at a share of 0.1 was booked up to 800 s ahead, returns trickling at
    65 a minute while capacity for 1,400 was free). Past `max_s` the books are full and a
    refusal is spread at random over [base_s, max_s] instead."""

    # The booking rate grown by this factor since the earliest room was found: look again.
    _RESCAN = 1.1

    def __init__(
        self,
        slots: int,
        max_s: int,
        rng: random.Random,
        clock: Callable[[], float] = time.monotonic,
        share: float = RETURN_SHARE,
    ) -> None:
        if not 0.0 < share <= 1.0:
            raise ValueError(f"the return share must be in (0, 1], got {share}")
        self.max_s = max_s
        self.share = share
        self._rng = rng
        self._clock = clock
        self._interval = 1.0 / slots  # seconds between completions at capacity: a first guess
        self._last_done: float | None = None
        self._booked: dict[int, int] = {}  # second (of the clock) -> returns booked into it
        self._earliest = 0  # no second before this one has room (at `_earliest_rate`)
        self._earliest_rate = 0.0
        self._origin = 0  # the second the books (re)started at, when nothing was booked ahead
        self._last = -1  # the last second booked into

    @property
    def capacity_per_s(self) -> float:
        return 1.0 / self._interval

    def _room(self, second: int, rate: float) -> int:
        """Returns second `second` holds at `rate` a second: the whole bookings between
        `(second - origin) * rate` and the next second's, rounded up, so that fractions add up
        over the seconds and the books' first second has room whatever the rate."""
        offset = second - self._origin
        return math.ceil((offset + 1) * rate) - math.ceil(offset * rate)

    def _first_free(self, now: float, base_s: int) -> int:
        """The first second from `now + base_s` with room at the current rate."""
        rate = self.share * self.capacity_per_s
        if rate > self._earliest_rate * self._RESCAN:
            self._earliest, self._earliest_rate = 0, rate  # more room everywhere: look again
        elif rate < self._earliest_rate:
            self._earliest_rate = rate
        second = max(self._earliest, math.floor(now) + base_s)
        limit = math.floor(now) + self.max_s + 1
        while second < limit and self._booked.get(second, 0) >= self._room(second, rate):
            second += 1
        self._earliest = second
        return second

    def booked_ahead_s(self) -> float:
        """How far ahead of now the next free return time is (0: nothing booked ahead)."""
        now = self._clock()
        if self._last < math.floor(now):
            return 0.0
        return float(max(0, self._first_free(now, 0) - math.floor(now)))

    def completed(self, saturated: bool) -> None:
        """One batch gave its slot back; `saturated`: every slot was taken until then."""
        now = self._clock()
        if saturated and self._last_done is not None:
            self._interval += _SMOOTHING * (max(now - self._last_done, 1e-6) - self._interval)
        self._last_done = now if saturated else None

    def book(self, base_s: int) -> int:
        """Seconds until a batch refused now should come back (its Retry-After)."""
        now = self._clock()
        if self._last < math.floor(now):  # nothing booked ahead: the books start afresh
            self._origin, self._earliest = math.floor(now) + base_s, 0
        second = self._first_free(now, base_s)
        wait = second - math.floor(now)
        if wait > self.max_s:
            return self._rng.randint(base_s, max(base_s, self.max_s))
        self._booked[second] = self._booked.get(second, 0) + 1
        self._last = max(self._last, second)
        if len(self._booked) > 2 * (self.max_s + 1):  # forget the seconds gone by
            past = math.floor(now)
            self._booked = {k: v for k, v in self._booked.items() if k >= past}
        return wait


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
        return_share: float = RETURN_SHARE,
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
        self.returns = ReturnSchedule(
            inflight, busy_retry_after_max_s, self._rng, clock, share=return_share
        )
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
