"""A batch's body as it goes on the wire, and the format measurement batches go in.

The format is negotiated (docs/PROTOCOL.md): JSON until an answer of ingestd lists the columnar
encoding (`Accept-Post`) and zstd (`Accept-Encoding`), then whatever the latest answer says; a
415 to a columnar batch turns it off at once, and PUSHER_WIRE_FORMAT=json never turns it on.
`Negotiation` keeps that state; the client tells it each answer, the daemon reads `format` and
has the next batch read and encoded in it.

Bodies are compressed in a worker thread (zlib and zstd release the GIL), so compressing the
next batch overlaps the network wait for the current one.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Mapping
from dataclasses import dataclass

from fleetcore import zstd_compress
from fleetcore.protocol import ACCEPT_ENCODING_HEADER, ACCEPT_POST_HEADER, WireFormat

__all__ = ["Negotiation", "WireBody", "encode", "gzip_body", "takes_columnar"]

_GZIP_WBITS = 16 + zlib.MAX_WBITS


def gzip_body(body: bytes, level: int) -> bytes:
    """gzip with no timestamp/name header, so equal bodies compress to equal bytes."""
    comp = zlib.compressobj(level, zlib.DEFLATED, _GZIP_WBITS)
    return comp.compress(body) + comp.flush()


@dataclass(frozen=True, slots=True)
class WireBody:
    """A body as it goes on the wire: its bytes, format and coding (None: sent as it is)."""

    data: bytes
    format: WireFormat = WireFormat.JSON
    encoding: str | None = "gzip"


async def encode(body: bytes, fmt: WireFormat, gzip_level: int) -> WireBody:
    """JSON gzip'd; columnar zstd'd, or as it is when zstd would not make it smaller (a
    steady-state batch of a few rows: no frame overhead, no Content-Encoding header)."""
    if fmt is WireFormat.JSON:
        return WireBody(await asyncio.to_thread(gzip_body, body, gzip_level))
    packed = await asyncio.to_thread(zstd_compress, body)
    if len(packed) < len(body):
        return WireBody(packed, fmt, "zstd")
    return WireBody(body, fmt, None)


def _listed(value: str | None) -> set[str]:
    return {part.split(";")[0].strip().lower() for part in (value or "").split(",")}


def takes_columnar(headers: Mapping[str, str]) -> bool:
    """Whether an answer of ingestd says it takes columnar zstd bodies."""
    return WireFormat.COLUMNAR in _listed(headers.get(ACCEPT_POST_HEADER)) and "zstd" in _listed(
        headers.get(ACCEPT_ENCODING_HEADER)
    )


class Negotiation:
    """The format of the next measurement batch; `setting` is PUSHER_WIRE_FORMAT (auto, json)."""

    def __init__(self, setting: str = "auto") -> None:
        self.setting = setting
        self._offered = False

    @property
    def format(self) -> WireFormat:
        if self._offered and self.setting == "auto":
            return WireFormat.COLUMNAR
        return WireFormat.JSON

    def remember(self, accepted: WireFormat | None) -> None:
        """ingestd accepted a batch in `accepted` before (the stored state, at a new session):
        columnar it took, columnar it is offered until an answer says otherwise."""
        if accepted is WireFormat.COLUMNAR:
            self._offered = True

    def answered(self, headers: Mapping[str, str]) -> None:
        """An answer of ingestd arrived: it lists what it takes."""
        self._offered = takes_columnar(headers)

    def refused(self, sent: WireFormat) -> None:
        """ingestd answered 415 to a body in `sent`: an older ingestd, JSON from now on."""
        if sent is WireFormat.COLUMNAR:
            self._offered = False
