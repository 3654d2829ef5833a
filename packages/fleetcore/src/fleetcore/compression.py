"""zstd for request bodies, with the receiving side bounded whatever the sender claims.

A zstd frame may declare its decompressed size; a one-shot decompressor trusts it and allocates
that much. Bodies are therefore always stream-decompressed here, asking for at most the bytes
still allowed (`max_length`), so a bomb or a frame with a lying content size stops at the limit;
the window a frame may demand is capped too (`MAX_WINDOW_LOG`), since the decoder allocates it
up front. A truncated frame is an error, never a silently shorter body, and a body has at most
`MAX_BODY_MEMBERS` frames (the sender sends one; each costs a decoder whatever its size).

Binding: the standard library's `compression.zstd` (Python 3.14, PEP 784), through its backport
`backports.zstd` on older Pythons (same API, same maintainers as pyzstd).
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from fleetcore.limits import MAX_BODY_MEMBERS

if sys.version_info >= (3, 14):  # pragma: no cover - exercised on 3.14 only
    from compression import zstd
else:
    from backports import zstd

__all__ = [
    "MAX_WINDOW_LOG",
    "STEP_OUTPUT",
    "TABLE_LOG",
    "ZSTD_LEVEL",
    "DecompressedTooLarge",
    "InvalidCompressedBody",
    "TooManyMembers",
    "zstd_compress",
    "zstd_decompress",
]

ZSTD_LEVEL = 3
TABLE_LOG = 14
"""Hash and chain tables of 2**14 entries each (level 3 sizes them 2**17 and 2**16 for a
5,000-row batch's ~220 KiB body): the compressor of a batch takes ~0.6 MiB less while it runs
(a gateway's pusher peaks as it compresses) for a body 0.1 % larger, in about the same time."""
MAX_WINDOW_LOG = 23
"""Largest window a frame may ask for, 8 MiB (level 3 on a batch of a few MB uses ≤ 2 MiB)."""

_CHUNK = 64 * 1024
STEP_OUTPUT = 1024 * 1024
"""Bytes of output one decompression step may add (what `progress` is asked for ahead)."""
_OPTIONS: dict[int, int] = {zstd.DecompressionParameter.window_log_max: MAX_WINDOW_LOG}


class InvalidCompressedBody(ValueError):
    """The body is not a complete, valid zstd stream (corrupt, truncated, window over the cap)."""


class TooManyMembers(ValueError):
    """The body has more gzip members / zstd frames than `max_members` (the sender sends one)."""

    def __init__(self, max_members: int) -> None:
        super().__init__(
            f"body has more than {max_members} compressed members (gzip members or zstd frames)"
        )
        self.max_members = max_members


class DecompressedTooLarge(ValueError):
    """The decompressed body would pass `max_bytes`."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(f"decompressed body is over the {max_bytes}-byte limit")
        self.max_bytes = max_bytes


def zstd_compress(data: bytes | bytearray | memoryview, level: int = ZSTD_LEVEL) -> bytes:
    """One frame with its content size and a checksum (corruption is detected, not stored),
    with small tables (`TABLE_LOG`)."""
    options: dict[int, int] = {
        zstd.CompressionParameter.compression_level: level,
        zstd.CompressionParameter.checksum_flag: 1,
        zstd.CompressionParameter.hash_log: TABLE_LOG,
        zstd.CompressionParameter.chain_log: TABLE_LOG,
    }
    return zstd.compress(data, options=options)


def zstd_decompress(
    data: bytes | bytearray | memoryview,
    max_bytes: int,
    *,
    max_frames: int = MAX_BODY_MEMBERS,
    progress: Callable[[int], None] | None = None,
) -> bytearray:
    """Every frame of `data` decompressed, refusing past `max_bytes` before holding more and past
    `max_frames` frames (`TooManyMembers`) before starting another.

    The input is read through a memoryview in chunks of `_CHUNK` bytes, so what is left after a
    frame is never copied whole (an empty frame is 9-13 bytes: re-copying the rest after each
    would make a body of many of them quadratic). Each step yields at most `STEP_OUTPUT` bytes;
    `progress`, when given, is called before it with the output size it may reach, and may raise
    to stop (a deadline, a memory budget that must be asked before the bytes are held)."""
    view = memoryview(data).cast("B")
    out = bytearray()
    pos = 0
    frames = 0
    try:
        while pos < len(view):
            frames += 1
            if frames > max_frames:
                raise TooManyMembers(max_frames)
            decoder = zstd.ZstdDecompressor(options=_OPTIONS)
            while not decoder.eof:
                if decoder.needs_input:
                    if pos >= len(view):
                        raise InvalidCompressedBody("zstd body is truncated")
                    chunk = view[pos : pos + _CHUNK]
                    pos += len(chunk)
                else:
                    chunk = view[0:0]
                step = min(max_bytes + 1 - len(out), STEP_OUTPUT)
                if progress is not None:
                    progress(len(out) + step)
                out += decoder.decompress(chunk, max_length=step)
                if len(out) > max_bytes:
                    raise DecompressedTooLarge(max_bytes)
            pos -= len(decoder.unused_data)
    except zstd.ZstdError as exc:
        raise InvalidCompressedBody(f"body is not valid zstd: {exc}") from None
    return out
