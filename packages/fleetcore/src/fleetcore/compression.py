"""zstd for request bodies, with the receiving side bounded whatever the sender claims.

A zstd frame may declare its decompressed size; a one-shot decompressor trusts it and allocates
that much. Bodies are therefore always stream-decompressed here, asking for at most the bytes
still allowed (`max_length`), so a bomb or a frame with a lying content size stops at the limit;
the window a frame may demand is capped too (`MAX_WINDOW_LOG`), since the decoder allocates it
up front. A truncated frame is an error, never a silently shorter body.

Binding: the standard library's `compression.zstd` (Python 3.14, PEP 784), through its backport
`backports.zstd` on older Pythons (same API, same maintainers as pyzstd).
"""

from __future__ import annotations

import sys

if sys.version_info >= (3, 14):  # pragma: no cover - exercised on 3.14 only
    from compression import zstd
else:
    from backports import zstd

__all__ = [
    "MAX_WINDOW_LOG",
    "ZSTD_LEVEL",
    "DecompressedTooLarge",
    "InvalidCompressedBody",
    "zstd_compress",
    "zstd_decompress",
]

ZSTD_LEVEL = 3
MAX_WINDOW_LOG = 23
"""Largest window a frame may ask for, 8 MiB (level 3 on a batch of a few MB uses ≤ 2 MiB)."""

_OPTIONS: dict[int, int] = {zstd.DecompressionParameter.window_log_max: MAX_WINDOW_LOG}


class InvalidCompressedBody(ValueError):
    """The body is not a complete, valid zstd stream (corrupt, truncated, window over the cap)."""


class DecompressedTooLarge(ValueError):
    """The decompressed body would pass `max_bytes`."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(f"decompressed body is over the {max_bytes}-byte limit")
        self.max_bytes = max_bytes


def zstd_compress(data: bytes | bytearray | memoryview, level: int = ZSTD_LEVEL) -> bytes:
    """One frame with its content size and a checksum (corruption is detected, not stored)."""
    options: dict[int, int] = {
        zstd.CompressionParameter.compression_level: level,
        zstd.CompressionParameter.checksum_flag: 1,
    }
    return zstd.compress(data, options=options)


def zstd_decompress(data: bytes | bytearray | memoryview, max_bytes: int) -> bytearray:
    """Every frame of `data` decompressed, refusing past `max_bytes` before holding more."""
    out = bytearray()
    pending: bytes | bytearray | memoryview = data
    while pending:
        decoder = zstd.ZstdDecompressor(options=_OPTIONS)
        chunk: bytes | bytearray | memoryview = pending
        try:
            while not decoder.eof:
                piece = decoder.decompress(chunk, max_length=max_bytes + 1 - len(out))
                chunk = b""
                out += piece
                if len(out) > max_bytes:
                    raise DecompressedTooLarge(max_bytes)
                if decoder.needs_input and not decoder.eof:
                    raise InvalidCompressedBody("zstd body is truncated")
        except zstd.ZstdError as exc:
            raise InvalidCompressedBody(f"body is not valid zstd: {exc}") from None
        pending = decoder.unused_data
    return out
