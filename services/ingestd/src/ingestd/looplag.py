"""How late the event loop wakes: the one figure that shows a process stalling while its CPU
share looks low.

Everything ingestd does on its loop (parsing headers, deciding admission, answering) waits while
one callback runs; a stretch of synchronous work (a background round classifying every gateway,
a garbage collection of a large heap) holds every request arriving meanwhile, and a burst of them
then finds the waiting line full (503 `busy`) though the process averages well under a core.
`watch_loop` sleeps `TICK_S` at a time and records how much later than asked it woke, into
`fleet_ingest_event_loop_lag_seconds` (a histogram: the rate of wakes over 0.1 s is the share of
time requests are held that long); a wake later than `STALL_LOG_S` is also logged
(`event_loop_stalled`, with the lag), so a stall can be matched with what ran then.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import structlog

__all__ = ["STALL_LOG_S", "TICK_S", "watch_loop"]

log = structlog.get_logger("ingestd")

TICK_S = 0.05
"""How often the loop is asked to wake (20 wakes a second: ~20 µs of CPU each)."""
STALL_LOG_S = 0.25
"""A wake later than this is logged."""


async def watch_loop(observe: Callable[[float], None], tick_s: float = TICK_S) -> None:
    """Until cancelled: every `tick_s`, `observe` how many seconds late the loop woke."""
    while True:
        asked = time.perf_counter()
        await asyncio.sleep(tick_s)
        lag = max(0.0, time.perf_counter() - asked - tick_s)
        observe(lag)
        if lag > STALL_LOG_S:
            log.info("event_loop_stalled", lag_ms=round(lag * 1000, 1))
