"""The columnar encoding's constants and scalar helpers, without numpy (docs/PROTOCOL.md).

Both encoders (`fleetcore.columnar`, numpy, used by ingestd and the benches; and
`fleetcore.columnar_stdlib`, the standard library only, used by the pusher on gateways where
numpy is too heavy or has no wheel) and the decoder take the layout from here, so the numbers a
body is made of are written once.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fleetcore.schemas import MEASUREMENT_VALUE_FIELDS

__all__ = [
    "BITPACK_BELOW_ROWS",
    "COLUMNAR_MEDIA_TYPE",
    "COLUMNAR_VERSION",
    "COLUMN_IDS",
    "COLUMN_NAMES",
    "EXACT_LIMIT",
    "KEY_COLUMNS",
    "KIND_DECIMAL",
    "KIND_FLOAT",
    "KIND_INT",
    "MAX_SCALE",
    "MODE_DELTA",
    "MODE_OFFSET",
    "PACK_BITS",
    "PACK_BYTES",
    "POW10",
    "REF_CANDIDATES",
    "SAMPLE",
    "base_bytes",
    "column_header",
    "datetime_from_micros",
    "micros_from_datetime",
    "varint",
    "zigzag64",
]

COLUMNAR_VERSION = 1
COLUMNAR_MEDIA_TYPE = "application/vnd.fleet.columnar.v1"
KEY_COLUMNS: tuple[str, ...] = ("time", "device_id", "received_at")
COLUMN_NAMES: tuple[str, ...] = (*KEY_COLUMNS, *MEASUREMENT_VALUE_FIELDS)
COLUMN_IDS = {name: i for i, name in enumerate(COLUMN_NAMES)}
REF_CANDIDATES = 4  # earlier columns tried as a reference (related readings sit side by side)

KIND_INT, KIND_DECIMAL, KIND_FLOAT = 0, 1, 2
MODE_OFFSET, MODE_DELTA = 0, 1
PACK_BYTES, PACK_BITS = 0, 1
BITPACK_BELOW_ROWS = 256
SAMPLE = 512  # rows a large batch's forms and decimal scale are first judged on
MAX_SCALE = 15
EXACT_LIMIT = 2**53  # integers below this convert to float64 exactly
# Exact powers of ten (from integers, not pow()): sender and receiver divide by the same number.
POW10: tuple[float, ...] = tuple(float(10**s) for s in range(MAX_SCALE + 1))
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICRO = timedelta(microseconds=1)


def micros_from_datetime(moment: datetime) -> int:
    return (moment - _EPOCH) // _MICRO


def datetime_from_micros(micros: int) -> datetime:
    """Raises OverflowError outside Python's datetime range (years 1-9999)."""
    return _EPOCH + timedelta(microseconds=micros)


def varint(value: int) -> bytes:
    """Unsigned LEB128."""
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def zigzag64(value: int) -> int:
    return value << 1 if value >= 0 else ((-value) << 1) - 1


def base_bytes(base: int) -> int:
    """Bytes of a base's zigzag varint (what choosing a form costs besides its data)."""
    return max(1, (zigzag64(base).bit_length() + 6) // 7)


def column_header(
    column_id: int, has_nulls: bool, kind: int, scale: int, packing: int, mode: int, width: int,
    ref: int | None, base: int,
) -> bytes:  # fmt: skip
    """One column's header: first · code · width · [reference id] · varint zigzag(base)."""
    first = (0x80 if has_nulls else 0) | (0x40 if ref is not None else 0) | column_id
    code = kind << 6 | packing << 5 | mode << 4 | scale
    header = bytes((first, code, width))
    if ref is not None:
        header += bytes((ref,))
    return header + varint(zigzag64(base))
