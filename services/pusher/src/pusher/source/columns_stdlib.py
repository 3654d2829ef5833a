"""A columnar batch from the customer database's records with the standard library only: the
gateway path (no numpy). `fleetcore.columnar_stdlib` encodes it — the same body, byte for byte,
as `columns_numpy`.

The records are never unpacked row by row: every field sits at the same offset of each
fixed-size record, so a column is gathered with a few strided byte slices (one per byte of the
field, in C), reordered into native byte order and read as an `array`. Columns are built one at
a time as the encoder asks for them and dropped once encoded, so a 5,000-row batch holds its
record bytes and a few columns, not 5,000 tuples of 29 Python objects (~6 MiB, and the CPU of
making them). Rows go meter by meter in time (neighbouring values differ least): one sort of
the row indices, applied to each column.
"""

from __future__ import annotations

import sys
from array import array
from collections.abc import Iterator, Mapping, Sequence
from functools import reduce
from operator import itemgetter, le, or_
from typing import TypeVar

from fleetcore import MEASUREMENT_VALUE_FIELDS, PushCursor
from fleetcore.columnar_layout import datetime_from_micros
from fleetcore.columnar_stdlib import PlainColumn, encode_plain_columns
from fleetcore.intpack_stdlib import STEP, mapped
from fleetcore.protocol import WireFormat

from pusher.source.reads import MeasurementBatch
from pusher.source.records import (
    HIGH_PG,
    LOW_PG,
    POSTGRES_EPOCH_US,
    RECORD,
    check_length,
    first_row_json,
)

__all__ = ["batch_from_records"]

_FIRST_VALUE = 5  # xid, device_id, time, received_at, mask, then the values
# Offsets in a record (see `records.py`): device_id, time, received_at, mask, the values.
_DEVICE, _TIME, _RECEIVED, _MASK, _VALUES = 8, 16, 24, 32, 36
_LITTLE = sys.byteorder == "little"
_T = TypeVar("_T", int, float)


def _gathered(data: bytes | bytearray, count: int, offset: int, width: int) -> bytearray:
    """The big-endian field at `offset` of every record, in native byte order."""
    native = bytearray(width * count)
    for k in range(width):
        native[(width - 1 - k if _LITTLE else k) :: width] = data[offset + k :: RECORD.size]
    return native


def _ints(data: bytes | bytearray, count: int, offset: int, code: str = "q") -> array[int]:
    return array(code, _gathered(data, count, offset, array(code).itemsize))


def _floats(data: bytes | bytearray, count: int, offset: int) -> array[float]:
    return array("d", _gathered(data, count, offset, 8))


def _first_item(record: tuple[int | float, ...]) -> dict[str, int | float]:
    item: dict[str, int | float] = {
        "time": int(record[2]) + POSTGRES_EPOCH_US,
        "device_id": record[1],
        "received_at": int(record[3]) + POSTGRES_EPOCH_US,
    }
    mask = int(record[4])
    for bit, name in enumerate(MEASUREMENT_VALUE_FIELDS):
        if not mask >> bit & 1:
            item[name] = record[_FIRST_VALUE + bit]
    return item


class _Columns(Mapping[str, PlainColumn]):
    """The batch's columns, each gathered from the records when asked for, rows in `order`."""

    def __init__(
        self,
        data: bytes | bytearray,
        count: int,
        order: _Reorder | None,
        keys: dict[str, array[int]],
    ) -> None:
        self._data, self._count, self._order, self._keys = data, count, order, keys
        masks = self._take(_ints(self._data, count, _MASK, "I"))
        self._any_null = reduce(or_, masks, 0)
        self._masks = masks if self._any_null else array("I")
        self._names = [*keys, *MEASUREMENT_VALUE_FIELDS]

    def _take(self, column: array[_T]) -> array[_T]:
        if self._order is None:
            return column
        return self._order(column)

    def __getitem__(self, name: str) -> PlainColumn:
        if name in self._keys:
            return PlainColumn(self._keys[name])
        bit = MEASUREMENT_VALUE_FIELDS.index(name)
        values = self._take(_floats(self._data, self._count, _VALUES + 8 * bit))
        nulls = None
        if self._any_null >> bit & 1:
            nulls = [bool(m >> bit & 1) for m in self._masks]
        return PlainColumn(values, nulls)

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


def _in_order(devices: array[int], times: array[int]) -> bool:
    """Whether the rows already go meter by meter in time (sorting them would change nothing)."""
    pairs = zip(devices, times, strict=True)
    return all(map(le, pairs, zip(devices[1:], times[1:], strict=True)))


class _Reorder:
    """Rows taken in an order (row indices), from any column: an `itemgetter` of `STEP` indices
    at a time, so a column is reordered in C a slice at a time."""

    def __init__(self, order: list[int]) -> None:
        getters = [itemgetter(*order[i : i + STEP]) for i in range(0, len(order), STEP)]
        # an itemgetter of one index gives the item, not a tuple of one
        self._alone = getters.pop() if len(order) % STEP == 1 else None
        self._getters = getters

    def __call__(self, column: array[_T]) -> array[_T]:
        out: array[_T] = array(column.typecode)
        for getter in self._getters:
            out += array(column.typecode, getter(column))
        if self._alone is not None:
            out.append(self._alone(column))
        return out


def _meter_order(devices: array[int], times: array[int], rows: Sequence[int]) -> _Reorder:
    """`rows` meter by meter, each in time: two stable sorts on one key each (a (device, time)
    tuple per row was ~0.6 MiB of a 5,000-row batch's peak)."""
    ordered = sorted(rows, key=times.__getitem__)
    ordered.sort(key=devices.__getitem__)
    return _Reorder(ordered)


def _carriable(times: array[int]) -> bool:
    """Whether the protocol can carry every one of `times` (PostgreSQL's µs)."""
    return min(times) > LOW_PG and max(times) < HIGH_PG


def batch_from_records(
    data: bytes | bytearray, count: int, after: PushCursor, limit: int
) -> MeasurementBatch:
    """The batch in the stream: rows whose times the protocol can carry go in the body (meter
    by meter, in time: neighbouring values differ least), the others are only passed by the
    cursor (and quarantined then, like the JSON path's)."""
    check_length(data, count)
    if not count:
        return MeasurementBatch(after, after, b"", 0, limit, None, None, 0, WireFormat.COLUMNAR)
    times = _ints(data, count, _TIME)
    received = _ints(data, count, _RECEIVED)
    devices = _ints(data, count, _DEVICE)
    last = RECORD.unpack_from(data, (count - 1) * RECORD.size)
    rows: Sequence[int] = range(count)
    if not (_carriable(times) and _carriable(received)):
        rows = [
            i
            for i, (t, r) in enumerate(zip(times, received, strict=True))
            if LOW_PG < t < HIGH_PG and LOW_PG < r < HIGH_PG
        ]
    sent = len(rows)
    first = (
        first_row_json(_first_item(RECORD.unpack_from(data, rows[0] * RECORD.size)))
        if sent
        else None
    )
    # None: all carriable and already meter by meter in time
    order = None
    if sent < count or not _in_order(devices, times):
        order = _meter_order(devices, times, rows)
    keys: dict[str, array[int]] = {}
    for name, column in (("time", times), ("device_id", devices), ("received_at", received)):
        values = column if order is None else order(column)
        keys[name] = (
            values if name == "device_id" else mapped("q", POSTGRES_EPOCH_US.__add__, values)
        )
    del times, received, devices
    newest = datetime_from_micros(max(keys["received_at"])) if sent else None
    body = encode_plain_columns(sent, _Columns(data, count, order, keys))
    last_time = min(max(int(last[2]), LOW_PG), HIGH_PG) + POSTGRES_EPOCH_US
    end = PushCursor(int(last[0]), int(last[1]), datetime_from_micros(last_time))
    return MeasurementBatch(
        after, end, body, count, limit, newest, first, sent, WireFormat.COLUMNAR
    )
