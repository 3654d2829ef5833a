"""Keeping a long-running pusher's memory flat on a small gateway.

Two things made a pusher's RSS climb over hours although it holds no more data (issue 24's soak:
34 → 71 MB; numpy's import, ~30 MiB, was the rest of the difference to its footprint):

- glibc's malloc gives every thread that allocates its own arena (up to 8 per core), and an
  arena keeps the memory freed into it. Batches are parsed, encoded and compressed in worker
  threads (`asyncio.to_thread`) and aiohttp resolves names in them, so each worker's arena
  grew to the largest batch it ever handled and stayed there. `mallopt(M_ARENA_MAX, 2)` caps
  them at two, as MALLOC_ARENA_MAX=2 would (set before any thread exists, so it holds for all).
- the default executor may start min(32, cores + 4) threads, each with its stack and arena,
  for work that runs one batch at a time: two workers are enough (one read ahead, one
  compressing).
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
from concurrent.futures import ThreadPoolExecutor

__all__ = ["MALLOC_ARENAS", "WORKER_THREADS", "limit_arenas", "use_bounded_executor"]

MALLOC_ARENAS = 2
WORKER_THREADS = 2
_M_ARENA_MAX = -8  # glibc's malloc.h


def limit_arenas(arenas: int = MALLOC_ARENAS) -> bool:
    """Cap glibc's malloc arenas; False where the C library is not glibc (musl has none)."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        return bool(libc.mallopt(_M_ARENA_MAX, arenas))
    except (OSError, AttributeError):
        return False


def use_bounded_executor(
    loop: asyncio.AbstractEventLoop, workers: int = WORKER_THREADS
) -> ThreadPoolExecutor:
    """Make a small pool the loop's default executor (what `asyncio.to_thread` uses)."""
    executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="pusher-worker")
    loop.set_default_executor(executor)
    return executor
