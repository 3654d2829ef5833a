"""glibc's malloc told to keep the memory a batch frees, for the next batch (`keep_freed_memory`,
called once by `ingestd serve`).

A large batch allocates a few buffers of hundreds of KiB to a few MiB each (the inflated body,
its chunks, the value matrices, the COPY stream: ~8 MiB for a 5,000-row gzip JSON batch) and frees
them when it is stored. At glibc's defaults each of them comes from a fresh `mmap` or from heap
pages that the free before gave back (its trim threshold follows the mmap threshold, twice the
largest block freed: a few MiB here), so every batch faulted its pages in again: ~1,600-1,800
page faults a batch, ~0.7 µs/row of system time on top of ~2.9 of decoding (bench/README.md,
issue 22's guard, the eighth pass). Before the scaled layout a batch's rows went to psycopg's row
formatter as many small objects, which never left the heap.

Fixed here: blocks under `MMAP_THRESHOLD` come from the heap, and the heap keeps up to
`TRIM_THRESHOLD` free at its top (per arena; the Deployment caps the arenas at two,
MALLOC_ARENA_MAX) — what a process running at its peak keeps instead of giving back; the memory
budget still bounds what requests hold (docs/CAPACITY.md, "Memory"). A block larger than
`MMAP_THRESHOLD` (a body near the limits) is still mapped and unmapped on its own.
"""

from __future__ import annotations

import ctypes

__all__ = ["MMAP_THRESHOLD", "TRIM_THRESHOLD", "keep_freed_memory"]

MMAP_THRESHOLD = 32 * 1024 * 1024
"""glibc's own ceiling for its moving mmap threshold (on 64 bits), fixed from the start."""
TRIM_THRESHOLD = 32 * 1024 * 1024
"""Free memory an arena keeps at its top: a few large batches' buffers."""
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's malloc.h


def keep_freed_memory() -> bool:
    """Set glibc's mmap and trim thresholds (see the module docstring); False where the C library
    is not glibc (musl has no `mallopt`) or refuses them."""
    try:
        libc = ctypes.CDLL(None)
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
            libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
        )
    except (OSError, AttributeError):
        return False
