"""The event loop's lag as ingestd measures it (`ingestd.looplag`)."""

from __future__ import annotations

import asyncio
import time

import structlog
from ingestd.looplag import watch_loop

from tests.fix_pg import wait_for


async def test_a_loop_held_by_synchronous_work_is_seen_late_and_logged() -> None:
    """A callback holding the loop for 0.4 s shows as a wake at least 0.3 s late, logged as a
    stall with its lag."""
    lags: list[float] = []
    with structlog.testing.capture_logs() as logs:
        task = asyncio.create_task(watch_loop(lags.append, tick_s=0.01))
        await wait_for(lambda: len(lags) >= 3, what="a few wakes of a free loop")
        time.sleep(0.4)  # noqa: ASYNC251 (the point: synchronous work holding the loop)
        await wait_for(lambda: max(lags) >= 0.3, what="the late wake")
        task.cancel()
    stalls = [e for e in logs if e["event"] == "event_loop_stalled"]
    assert any(e["lag_ms"] >= 300 for e in stalls), stalls
