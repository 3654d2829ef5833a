"""Keeping a long-running pusher's memory flat on a small gateway.

Two things made a pusher's RSS climb over hours although it holds no more data (issue 24's soak:
34 → 71 MB; numpy's import, ~30 MiB, was the rest of the difference to its footprint):

- glibc's malloc gives every thread that allocates its own arena (up to 8 per core), and an
  arena keeps the memory freed into it. Batches are parsed, encoded and compressed in worker
  threads (`asyncio.to_thread`) and asyncio resolves names in them, so each worker's arena
  grew to the largest batch it ever handled and stayed there. `mallopt(M_ARENA_MAX, 2)` caps
  them at two, as MALLOC_ARENA_MAX=2 would (set before any thread exists, so it holds for all).
- the default executor may start min(32, cores + 4) threads, each with its stack and arena,
  for work that runs one batch at a time: two workers are enough (one read ahead, one
  compressing).

And a drained backlog leaves the memory of its batches (Python objects of 5,000-row batches,
~8 MiB) with the allocators; `BacklogRelease` collects and trims once when a backlog has gone
(`gc.collect()`, glibc's `malloc_trim(0)`), so an idle pusher returns to its import floor.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
from concurrent.futures import ThreadPoolExecutor

__all__ = [
    "MALLOC_ARENAS",
    "WORKER_THREADS",
    "BacklogRelease",
    "limit_arenas",
    "release_memory",
    "use_bounded_executor",
]

MALLOC_ARENAS = 2
WORKER_THREADS = 2
_M_ARENA_MAX = -8  # glibc's malloc.h


def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c"))
    except OSError:
        return None


def limit_arenas(arenas: int = MALLOC_ARENAS) -> bool:
    """Cap glibc's malloc arenas; False where the C library is not glibc (musl has none)."""
    libc = _libc()
    try:
        return libc is not None and bool(libc.mallopt(_M_ARENA_MAX, arenas))
    except AttributeError:
        return False


def release_memory() -> bool:
    """Collect garbage and give the heap's free pages back (glibc); False without glibc."""
    gc.collect()
    libc = _libc()
    try:
        if libc is not None:
            libc.malloc_trim(0)
        return libc is not None
    except AttributeError:
        return False


class BacklogRelease:
    """Told of each measurement batch read: after full batches (a backlog), the first one that
    is not full means the backlog has drained, and memory is released once."""

    def __init__(self) -> None:
        self._backlog = False
        self.releases = 0

    def batch_read(self, full: bool) -> None:
        if full:
            self._backlog = True
        elif self._backlog:
            self._backlog = False
            release_memory()
            self.releases += 1


def use_bounded_executor(
    loop: asyncio.AbstractEventLoop, workers: int = WORKER_THREADS
) -> ThreadPoolExecutor:
    """Make a small pool the loop's default executor (what `asyncio.to_thread` uses)."""
    executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="pusher-worker")
    loop.set_default_executor(executor)
    return executor
