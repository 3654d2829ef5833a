"""Shutdown of ingestd's background loops (housekeeping, fleet state, token listener, readiness)."""

from __future__ import annotations

import asyncio
import time

from ingestd.lifecycle import background


async def test_a_loop_that_lost_its_cancel_is_cancelled_again() -> None:
    """A loop that swallowed its cancel (as `asyncio.wait_for` can on Python 3.11) and went on to
    sleep for an hour is cancelled again: the app's shutdown ends within a second."""
    rounds: list[str] = []

    async def loop() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            rounds.append("first cancel lost")
        await asyncio.sleep(3600)

    started = time.monotonic()
    async with background(loop(), "swallower"):
        await asyncio.sleep(0)
    assert rounds == ["first cancel lost"]
    assert time.monotonic() - started < 5


async def test_a_loop_that_failed_still_raises_at_shutdown() -> None:
    """A loop that died with an error before shutdown raises it when the app stops, as before."""

    async def loop() -> None:
        raise RuntimeError("broken loop")

    try:
        async with background(loop(), "broken"):
            await asyncio.sleep(0.01)
    except RuntimeError as exc:
        assert str(exc) == "broken loop"
    else:
        raise AssertionError("the loop's error was lost")
