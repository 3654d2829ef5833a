"""Keeping a long-running pusher's memory flat on a small gateway.

Three things made a pusher's RSS climb over hours although it holds no more data (issue 24's soak:
34 → 71 MB; numpy's import, ~30 MiB, was the rest of the difference to its footprint):

- glibc's malloc gives every thread that allocates its own arena (up to 8 per core), and an
  arena keeps the memory freed into it. Batches are parsed, encoded and compressed in worker
  threads (`asyncio.to_thread`) and asyncio resolves names in them, so each worker's arena
  grew to the largest batch it ever handled and stayed there. `mallopt(M_ARENA_MAX, 2)` caps
  them at two, as MALLOC_ARENA_MAX=2 would (set before any thread exists, so it holds for all).
- the default executor may start min(32, cores + 4) threads, each with its stack and arena,
  for work that runs one batch at a time: two workers are enough (one read ahead, one
  compressing).
- glibc raises its mmap threshold to the largest block freed (up to 32 MiB): after the first
  batch of records (~1 MiB) was freed, every later one came from the heap, where freed space
  stays. The threshold is fixed (`M_MMAP_THRESHOLD`, which also stops the trim threshold
  moving), so a batch's large buffers go back to the system when freed; at 32 KiB rather than
  glibc's 128 KiB start, so do a column's arrays (5,000 values: 40 KiB) and the compressor's
  tables — a few dozen mmap calls a batch, and a draining pusher's RSS -0.2 MiB.

And a drained backlog leaves the memory of its batches (Python objects of 5,000-row batches,
a few MiB) with the allocators; `BacklogRelease` collects and trims when a backlog has gone
(`gc.collect()`, glibc's `malloc_trim(0)`), so an idle pusher returns to its import floor.

A pusher that never has a backlog (a gateway caught up, shipping each tick's rows) was never
trimmed: its heap is freed in the middle, batch after batch of varying size, and glibc gives
back only a free top of the heap, so its RSS crept up (+0.8 MiB per 10 minutes at 100 meters,
while the Python objects it holds stayed flat: tracemalloc's traced memory and gc's object
count did not grow). Memory is therefore also released at a batch read when `PERIOD_S` has
passed since the last release; and during a backlog the heap is trimmed after every full
batch read (what the batch before freed: draining peak -0.5 MiB).
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

__all__ = [
    "MALLOC_ARENAS",
    "WORKER_THREADS",
    "BacklogRelease",
    "limit_arenas",
    "release_memory",
    "trim_heap",
    "use_bounded_executor",
]

MALLOC_ARENAS = 2
WORKER_THREADS = 2
MMAP_THRESHOLD = 32 * 1024
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -3, -8  # glibc's malloc.h


def _libc() -> ctypes.CDLL | None:
    """The C library the interpreter runs on (its symbols, without a search for the file)."""
    try:
        return ctypes.CDLL(None)
    except OSError:
        return None


def limit_arenas(arenas: int = MALLOC_ARENAS) -> bool:
    """Cap glibc's malloc arenas, and keep its mmap threshold where it starts; False where the C
    library is not glibc (musl has neither)."""
    libc = _libc()
    try:
        return (
            libc is not None
            and bool(libc.mallopt(_M_ARENA_MAX, arenas))
            and bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD))
            and bool(libc.mallopt(_M_TRIM_THRESHOLD, 2 * MMAP_THRESHOLD))
        )
    except AttributeError:
        return False


def trim_heap() -> bool:
    """Give the malloc arenas' free pages back to the system (glibc's `malloc_trim(0)`, well
    under a millisecond here); False without glibc."""
    libc = _libc()
    try:
        if libc is not None:
            libc.malloc_trim(0)
        return libc is not None
    except AttributeError:
        return False


def release_memory() -> bool:
    """Collect garbage and give the heap's free pages back (glibc); False without glibc."""
    gc.collect()
    return trim_heap()


class BacklogRelease:
    """Told of each measurement batch read: a full one (a backlog goes on) trims the heap of
    what the previous batches freed; after full batches, the first one that
    is not full means the backlog has drained, and memory is released — then, and once more at
    the next batch read, when the last full batches (still on the wire or in the read-ahead the
    first time) are gone. Outside a backlog, memory is released at a batch read once `PERIOD_S`
    has passed since the last release (the full collection of the pusher's ~60,000 objects took
    0.11 s of the loop's time on a loaded machine, the trim alone under a millisecond)."""

    PERIOD_S = 60.0

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._backlog = False
        self._again = False
        self._clock = clock
        self._last = clock()
        self.releases = 0

    def batch_read(self, full: bool) -> None:
        if full:
            self._backlog, self._again = True, False
            trim_heap()
            return
        if self._backlog or self._again:
            self._backlog, self._again = False, self._backlog
            release_memory()
        elif self._clock() - self._last >= self.PERIOD_S:
            release_memory()
        else:
            return
        self._last = self._clock()
        self.releases += 1


def use_bounded_executor(
    loop: asyncio.AbstractEventLoop, workers: int = WORKER_THREADS
) -> ThreadPoolExecutor:
    """Make a small pool the loop's default executor (what `asyncio.to_thread` uses)."""
    executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="pusher-worker")
    loop.set_default_executor(executor)
    return executor
