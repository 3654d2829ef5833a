"""Reading a request body within its limits.

The compressed (wire) size is capped while the body streams in and the decompressed size while
it is inflated, so neither a huge upload nor a gzip or zstd bomb is ever held in memory beyond
its limit: decompression asks for at most the bytes still allowed (`max_length`) and stops as
soon as one more would pass the limit (zstd: `fleetcore.compression`, which also refuses a frame
whose window is over its cap, whatever content size the frame claims). Inflating gzip uses
python-isal (Intel ISA-L, zlib's API): 2.3 ms instead of 5.2 ms for a 5,000-row batch.

Two body types (docs/PROTOCOL.md): JSON (`application/json`) and the columnar measurements
encoding (`application/vnd.fleet.columnar.v1`), each as sent, gzip'd or zstd'd.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from aiohttp import web
from fleetcore import DecompressedTooLarge, InvalidCompressedBody, zstd_decompress
from fleetcore.protocol import ACCEPTED_ENCODINGS, COLUMNAR_MEDIA_TYPE, JSON_MEDIA_TYPE
from isal import isal_zlib

from ingestd.errors import BadRequest, PayloadTooLarge, RequestTimeout, UnsupportedMediaType

__all__ = ["Body", "BodyFormat", "check_content_headers", "decode_body", "read_wire_body"]

_CHUNK = 64 * 1024
_GZIP_WBITS = 16 + isal_zlib.MAX_WBITS
# isal's stubs declare `error` as an instance of Exception; at run time it is the exception class.
_INFLATE_ERROR: type[Exception] = isal_zlib.error  # type: ignore[assignment]


@dataclass(frozen=True, slots=True)
class Body:
    data: bytes | bytearray
    wire_bytes: int


@dataclass(frozen=True, slots=True)
class BodyFormat:
    columnar: bool  # the columnar measurements encoding, else JSON
    encoding: str  # "identity", "gzip" or "zstd"


_ENCODINGS = frozenset(("identity", "", *ACCEPTED_ENCODINGS))


def check_content_headers(request: web.Request, max_wire_bytes: int) -> BodyFormat:
    """Validate Content-Type/Encoding/Length before reading; return what the body is."""
    if request.content_type not in (JSON_MEDIA_TYPE, COLUMNAR_MEDIA_TYPE):
        raise UnsupportedMediaType(
            f"Content-Type must be {JSON_MEDIA_TYPE} or {COLUMNAR_MEDIA_TYPE}"
        )
    encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding not in _ENCODINGS:
        raise UnsupportedMediaType("Content-Encoding must be gzip, zstd or absent")
    length = request.content_length
    if length is not None and length > max_wire_bytes:
        raise PayloadTooLarge(
            max_wire_bytes, f"body of {length} bytes is over the {max_wire_bytes}-byte limit"
        )
    return BodyFormat(request.content_type == COLUMNAR_MEDIA_TYPE, encoding or "identity")


class _Inflater:
    """Streaming gzip decoder with a hard cap on output; handles multi-member streams."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.out = bytearray()
        self._z = isal_zlib.decompressobj(_GZIP_WBITS)

    def feed(self, chunk: bytes | bytearray) -> None:
        data = chunk
        while data:
            allowed = self.max_bytes - len(self.out)
            try:
                piece = self._z.decompress(data, allowed + 1)
            except _INFLATE_ERROR as exc:
                raise BadRequest("invalid_gzip", f"body is not valid gzip: {exc}") from None
            self.out += piece
            if len(self.out) > self.max_bytes:
                raise PayloadTooLarge(
                    self.max_bytes, f"decompressed body is over the {self.max_bytes}-byte limit"
                )
            if self._z.unconsumed_tail:
                data = self._z.unconsumed_tail
            elif self._z.eof and self._z.unused_data:
                data = self._z.unused_data  # next gzip member
                self._z = isal_zlib.decompressobj(_GZIP_WBITS)
            else:
                data = b""

    def finish(self) -> bytearray:
        if not self._z.eof:
            raise BadRequest("invalid_gzip", "gzip body is truncated")
        return self.out


async def _stream(request: web.Request, max_wire: int) -> bytearray:
    wire = bytearray()
    async for chunk in request.content.iter_chunked(_CHUNK):
        wire += chunk
        if len(wire) > max_wire:
            raise PayloadTooLarge(max_wire, f"body is over the {max_wire}-byte limit")
    return wire


async def read_wire_body(
    request: web.Request, *, max_wire_bytes: int, timeout_s: float
) -> bytearray:
    """Read the body as sent (still compressed) within its limit and the deadline (slow senders
    get 408). Inflating waits for `decode_body`, once the batch has a slot: a slow sender holds a
    connection and at most the wire limit of memory, never a slot."""
    try:
        async with asyncio.timeout(timeout_s):
            return await _stream(request, max_wire_bytes)
    except TimeoutError:
        raise RequestTimeout(f"body not received within {timeout_s:g} s") from None


def decode_body(wire: bytearray, *, encoding: str, max_body_bytes: int) -> Body:
    """The decompressed body, capped at `max_body_bytes` while inflating (bombs stop there)."""
    if encoding == "zstd":
        try:
            data = zstd_decompress(wire, max_body_bytes)
        except DecompressedTooLarge:
            raise PayloadTooLarge(
                max_body_bytes, f"decompressed body is over the {max_body_bytes}-byte limit"
            ) from None
        except InvalidCompressedBody as exc:
            raise BadRequest("invalid_zstd", str(exc)) from None
        return Body(data=data, wire_bytes=len(wire))
    if encoding != "gzip":
        if len(wire) > max_body_bytes:
            raise PayloadTooLarge(max_body_bytes, f"body is over the {max_body_bytes}-byte limit")
        return Body(data=wire, wire_bytes=len(wire))
    inflater = _Inflater(max_body_bytes)
    inflater.feed(wire)  # output capped at the limit + 1 byte per step, whatever the input size
    return Body(data=inflater.finish(), wire_bytes=len(wire))
