"""The fixed-size binary record the columnar read fetches per row (`columns.READ_MEASUREMENT_COLUMNS`)
and what both record parsers (`columns_stdlib`, `columns_numpy`) share about it.

Each record is PostgreSQL's send format of: push_xid (xid8, 8 bytes), device_id (int8), time and
received_at (timestamptz: µs since 2000-01-01), a 4-byte mask with bit i set where value i is
NULL, then every value as float8 (0 where NULL): all big-endian, so every record has one size.
"""

from __future__ import annotations

import struct
from typing import Any

import msgspec
from fleetcore import MEASUREMENT_VALUE_FIELDS
from fleetcore.columnar_layout import datetime_from_micros, micros_from_datetime

from pusher.errors import SourceError
from pusher.source.carriable import HIGH, LOW

__all__ = [
    "HIGH_PG",
    "LOW_PG",
    "POSTGRES_EPOCH_US",
    "RECORD",
    "Records",
    "check_length",
    "first_row_json",
]

RECORD = struct.Struct(">QqqqI" + "d" * len(MEASUREMENT_VALUE_FIELDS))
POSTGRES_EPOCH_US = 946_684_800_000_000
# The carriable range (`carriable.py`) in PostgreSQL's own µs since 2000 (±infinity are the
# int64 extremes there, BC dates large negatives: all outside).
LOW_PG = micros_from_datetime(LOW) - POSTGRES_EPOCH_US
HIGH_PG = micros_from_datetime(HIGH) - POSTGRES_EPOCH_US


Records = bytes | bytearray | list[bytes]
"""A batch's records: in one buffer, or in the chunks they were read in (a list the parsers
empty as they go, so a chunk's memory goes once it is parsed)."""


def check_length(data: Records, count: int) -> None:
    """Data of another size than `count` records, or a chunk of part of a record, is refused."""
    chunks = data if isinstance(data, list) else [data]
    size = sum(map(len, chunks))
    if size != count * RECORD.size or any(len(c) % RECORD.size for c in chunks):
        raise SourceError(f"{size} bytes of records for {count} rows")


def first_row_json(item: dict[str, Any]) -> str:
    """The first row sent, as JSON (what the pusher logs when ingestd refuses a batch); times are
    µs since 1970 in `item`."""
    shown = {
        name: datetime_from_micros(value) if name in ("time", "received_at") else value
        for name, value in item.items()
    }
    return msgspec.json.encode(shown).decode()
