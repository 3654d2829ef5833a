"""Capacity refusals are booked to come back as a stream the process can take (ingestd.admission)."""

from __future__ import annotations

import random
from collections import Counter
from itertools import pairwise

import pytest
from ingestd.admission import MAX_LINE, RETURN_SHARE, Admission, ReturnSchedule
from ingestd.errors import ServiceUnavailable


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _admission(
    clock: Clock, slots: int = 4, max_s: int = 900, share: float = RETURN_SHARE
) -> Admission:
    return Admission(
        slots,
        16,
        1.0,
        2,
        rng=random.Random(5),
        busy_retry_after_max_s=max_s,
        clock=clock,
        return_share=share,
    )


async def _saturated_completions(
    admission: Admission, clock: Clock, every_s: float, n: int
) -> None:
    """`n` batches finishing `every_s` apart while every slot stays taken (the next batch takes
    each freed slot at once)."""
    for _ in range(admission.max_inflight):
        await admission.acquire()
    await _completions(admission, clock, every_s, n)


async def _completions(admission: Admission, clock: Clock, every_s: float, n: int) -> None:
    for _ in range(n):
        clock.now += every_s
        admission.release()
        await admission.acquire()


@pytest.mark.parametrize("share", [RETURN_SHARE, 0.1, 0.5])
async def test_a_herd_is_booked_at_the_share_of_the_measured_capacity(share: float) -> None:
    """After batches finished 10 ms apart with every slot taken (100/s), 1,000 batches refused
    at one instant are told to come back at `share` of that (at a quarter over ~40 s, ~25 a
    second; a booking is rounded to the whole second before or after it: never more than
    two seconds' worth in one), none before the base."""
    clock = Clock()
    admission = _admission(clock, share=share)
    await _saturated_completions(admission, clock, 0.010, 200)
    assert 90 < admission.returns.capacity_per_s < 110
    waits = [int(admission.busy("line_full").headers()["Retry-After"]) for _ in range(1000)]
    assert min(waits) == 2
    assert 1000 / (share * 110) < max(waits) - 2 < 1000 / (share * 90) + 2
    per_second = Counter(waits)
    assert max(per_second.values()) <= 2 * share * 110
    inner = [per_second[s] for s in range(min(waits) + 1, max(waits))]
    assert share * 90 < sum(inner) / len(inner) < share * 110
    assert all(b >= a - 1 for a, b in pairwise(waits))  # booked in turn


@pytest.mark.parametrize("share", [0.0, -0.1, 1.01])
def test_a_share_outside_zero_to_one_is_refused(share: float) -> None:
    with pytest.raises(ValueError, match="return share must be in"):
        ReturnSchedule(4, 900, random.Random(1), share=share)


async def test_room_found_as_capacity_is_measured_is_booked_first() -> None:
    """A herd refused before the capacity is known is booked at the first guess (one slot's
    worth a second: 4/s here, 1 return a second at a quarter); once 100/s is measured, later
    refusals fill the room the early seconds have at 25/s instead of queueing behind those
    bookings."""
    clock = Clock()
    admission = _admission(clock, share=0.25)
    early = [int(admission.busy("line_full").headers()["Retry-After"]) for _ in range(100)]
    assert early == list(range(2, 102))  # one a second at the first guess
    await _saturated_completions(admission, clock, 0.010, 200)  # 2 s later, 100/s measured
    later = [int(admission.busy("line_full").headers()["Retry-After"]) for _ in range(230)]
    assert min(later) == 2 and max(later) <= 2 + 230 / (0.25 * 90 - 1) + 1
    returns = Counter(w + 2 for w in later)  # seconds from the first refusal
    for second, n in Counter(w for w in early).items():
        returns[second] += n
    assert max(returns.values()) <= 0.25 * 110 + 1  # no second over its share


def test_the_first_refusal_comes_back_at_the_base_whatever_the_rate() -> None:
    """Below one return a second (one slot, its first guess of 1/s, a tenth of it), the books'
    first second still has room: the first refusal is told the base, the next ones ~10 s apart."""
    clock = Clock()
    schedule = ReturnSchedule(1, 900, random.Random(1), clock=clock, share=0.1)
    assert schedule.booked_ahead_s() == 0.0
    waits = [schedule.book(3) for _ in range(4)]
    assert waits == [3, 13, 23, 33]
    assert schedule.booked_ahead_s() == 43.0


async def test_bookings_start_afresh_once_their_times_have_passed() -> None:
    """Refusals after the booked returns are over start again at the base Retry-After."""
    clock = Clock()
    admission = _admission(clock)
    await _saturated_completions(admission, clock, 0.010, 200)
    last = max(int(admission.busy("line_full").headers()["Retry-After"]) for _ in range(100))
    clock.now += last + 1
    assert int(admission.busy("line_full").headers()["Retry-After"]) == 2


async def test_past_the_horizon_refusals_are_spread_over_it() -> None:
    """When the books reach INGESTD_BUSY_RETRY_AFTER_MAX_S, later refusals get a random
    Retry-After between the base and that maximum instead of growing without bound."""
    clock = Clock()
    admission = _admission(clock, slots=1, max_s=30)  # no completions seen: 1 a second assumed
    waits = [int(admission.busy("line_full").headers()["Retry-After"]) for _ in range(200)]
    assert max(waits) <= 30 and min(waits) == 2
    assert len(set(waits[20:])) > 10  # spread, not piled up at the maximum


async def test_completions_with_free_slots_do_not_count_as_capacity() -> None:
    """Only intervals between batches finishing while every slot was taken measure capacity: a
    quiet process's slow trickle of batches does not make it look slow."""
    clock = Clock()
    admission = _admission(clock)
    await _saturated_completions(admission, clock, 0.010, 200)
    admission.release()  # a slot stays free from now on
    await _completions(admission, clock, 5.0, 50)
    assert 90 < admission.returns.capacity_per_s < 110


async def test_the_waiting_line_holds_what_the_measured_capacity_completes_in_the_wait() -> None:
    """At 100 batches/s measured and a 1 s wait, 100 received batches may wait for a slot (not
    INGESTD_MAX_WAITING's 16): a burst the process clears within the wait is not refused; the
    101st is, at once; the line never passes MAX_LINE."""
    clock = Clock()
    admission = _admission(clock)
    assert admission.line == 16  # nothing measured yet: 4 slots' first guess, 4/s
    await _saturated_completions(admission, clock, 0.010, 200)
    assert 90 <= admission.line <= 110
    admission._waiting = admission.line - 1
    admission.check()  # one more may wait
    admission._waiting += 1
    try:
        admission.check()
    except ServiceUnavailable:
        pass
    else:
        raise AssertionError("a batch behind a full line was not refused")
    assert admission.refused["line_full"] == 1
    admission._waiting = 0
    await _completions(admission, clock, 0.0001, 400)  # 10,000/s
    assert admission.line == MAX_LINE
