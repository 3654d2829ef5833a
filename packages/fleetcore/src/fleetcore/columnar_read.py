"""Reading a columnar body's parts (`fleetcore.columnar`'s layout): bounds-checked bytes and
varints, and the column headers with their checks. Shared by the numpy decoder
(`fleetcore.columnar`) and the small batches' (`fleetcore.columnar_small`)."""

from __future__ import annotations

import functools
from typing import NamedTuple

from fleetcore import intpack
from fleetcore.columnar_layout import COLUMN_NAMES, KEY_COLUMNS, KIND_DECIMAL, KIND_FLOAT, KIND_INT
from fleetcore.error_codes import ErrorCode
from fleetcore.schemas import BatchFormatError

__all__ = ["Header", "Reader", "invalid", "read_header", "read_headers"]


def invalid(detail: str) -> BatchFormatError:
    return BatchFormatError(ErrorCode.INVALID_BATCH, detail)


class Reader:
    """Bounds-checked reads from the body; running off its end is a format error."""

    def __init__(self, body: bytes | bytearray | memoryview) -> None:
        self.view = memoryview(body).cast("B")
        self.pos = 0

    def byte(self) -> int:
        if self.pos >= len(self.view):
            raise invalid("body ends early")
        self.pos += 1
        return int(self.view[self.pos - 1])

    def varint(self) -> int:
        if self.pos < len(self.view) and self.view[self.pos] < 0x80:  # one byte: most of them
            self.pos += 1
            return int(self.view[self.pos - 1])
        value = 0
        for shift in range(0, 70, 7):
            byte = self.byte()
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                if value >= 2**64:
                    break
                return value
        raise invalid("varint longer than 64 bits")

    def take(self, length: int) -> memoryview:
        if length > len(self.view) - self.pos:
            raise invalid("body ends early")
        self.pos += length
        return self.view[self.pos - length : self.pos]


class Header(NamedTuple):
    name: str
    kind: int
    scale: int
    packing: int
    mode: int
    width: int
    has_nulls: bool
    ref: str | None
    base: int


def read_header(reader: Reader) -> Header:
    """One column header (`read_headers` reads a body's all at once, the same way)."""
    return read_headers(reader, 1)[0]


def read_headers(reader: Reader, count: int) -> list[Header]:
    """`count` column headers: each one's bytes read (running off the body's end is "body ends
    early", a varint past 64 bits is refused), then checked. One loop over the bytes with no
    call per byte: a small batch's ~50 headers were a quarter of its decoding."""
    view, pos, end = reader.view, reader.pos, len(reader.view)
    headers = []
    for _ in range(count):
        if end - pos < 3:
            raise invalid("body ends early")
        first, code, width = view[pos], view[pos + 1], view[pos + 2]
        pos += 3
        ref_id = None
        if first & 0x40:
            if pos >= end:
                raise invalid("body ends early")
            ref_id = view[pos]
            pos += 1
        zigzag = shift = 0
        while True:
            if pos >= end:
                raise invalid("body ends early")
            byte = view[pos]
            pos += 1
            zigzag |= (byte & 0x7F) << shift
            if not byte & 0x80:
                break
            shift += 7
            if shift >= 70:
                raise invalid("varint longer than 64 bits")
        if zigzag >= 2**64:
            raise invalid("varint longer than 64 bits")
        base = (zigzag >> 1) ^ -(zigzag & 1)
        headers.append(Header(*_checked(first, code, width, ref_id, not base), base))
    reader.pos = pos
    return headers


@functools.lru_cache(maxsize=4096)
def _checked(
    first: int, code: int, width: int, ref_id: int | None, zero_base: bool
) -> tuple[str, int, int, int, int, int, bool, str | None]:
    """A header's fields but its base, checked (the base only matters as zero or not). Cached:
    a fleet's headers come in a few hundred forms, and checking one cost ~1.5 µs (a small
    batch's ~27-50 headers)."""
    column_id = first & 0x3F
    if column_id >= len(COLUMN_NAMES):
        raise invalid(f"unknown column id {column_id}")
    if ref_id is not None and ref_id >= len(COLUMN_NAMES):
        raise invalid(f"unknown reference column id {ref_id}")
    name = COLUMN_NAMES[column_id]
    kind, scale, packing, mode = code >> 6, code & 0x0F, code >> 5 & 1, code >> 4 & 1
    ref = None if ref_id is None else COLUMN_NAMES[ref_id]
    allowed = (KIND_INT,) if name in KEY_COLUMNS else (KIND_DECIMAL, KIND_FLOAT)
    if kind not in allowed:
        raise invalid(f"column {name}: kind {kind} is not allowed here")
    if width > 64 or (packing == intpack.PACK_BYTES and (width % 8 or not width)):
        raise invalid(f"column {name}: width {width} is not allowed with packing {packing}")
    if kind != KIND_DECIMAL and scale:
        raise invalid(f"column {name}: scale {scale} is only for decimal columns")
    if kind == KIND_FLOAT and (width != 64 or mode or not zero_base or ref):
        raise invalid(f"column {name}: float64 columns are 64 bits, mode 0, base 0, no reference")
    return name, kind, scale, packing, mode, width, bool(first & 0x80), ref
