"""A columnar batch from the customer database's records with the standard library only: the
gateway path (no numpy). `fleetcore.columnar_stdlib` encodes it — the same body, byte for byte,
as `columns_numpy`.

The records are never unpacked row by row: every field sits at the same offset of each
fixed-size record, so a column is gathered with a few strided byte slices (one per byte of the
field, in C), reordered into native byte order and read as an `array` — not 5,000 tuples of 29
Python objects (~6 MiB, and the CPU of making them). The records come in the chunks they were
read in (`columns.read_record_chunks`, ~110 KiB each): each chunk is gathered into the columns
and dropped, and each value column is dropped once encoded, so the batch's 1.1 MiB (5,000 rows)
is held once, and less and less of it while the batch is encoded (a draining pusher's RSS
follows: it holds a batch being read or encoded most of the time). Rows go meter by meter in
time (neighbouring values differ least): one sort of the row indices, applied to each column.
"""

from __future__ import annotations

import sys
from array import array
from collections.abc import Iterator, Mapping, Sequence
from functools import reduce
from operator import itemgetter, le, or_
from typing import Any, TypeVar

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
    Records,
    check_length,
    first_row_json,
)

__all__ = ["batch_from_records"]

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


_FIELDS = (
    (_DEVICE, "q"),
    (_TIME, "q"),
    (_RECEIVED, "q"),
    (_MASK, "I"),
    *((_VALUES + 8 * bit, "d") for bit in range(len(MEASUREMENT_VALUE_FIELDS))),
)


def _gather(data: Records, count: int) -> tuple[dict[int, array[Any]], tuple[Any, ...]]:
    """Every field but the xid as a column (by its offset), and the last record. A list of
    chunks is emptied as it is gathered, each chunk dropped once its fields are taken. Each
    column is made at its full size at once (5,000 values: 20-40 KiB, past glibc's mmap
    threshold, `ops/memory.py`), so it goes back to the system as soon as it is dropped."""
    chunks = data if isinstance(data, list) else [data]
    last_chunk = next(c for c in reversed(chunks) if c)
    last = RECORD.unpack_from(last_chunk, len(last_chunk) - RECORD.size)
    del last_chunk
    columns: dict[int, array[Any]] = {}
    for offset, code in _FIELDS:
        columns[offset] = array(code, [0]) * count
    start = 0
    while chunks:
        chunk = chunks.pop(0)
        rows = len(chunk) // RECORD.size
        for offset, column in columns.items():
            width = column.itemsize
            with memoryview(column).cast("B") as view:
                view[start * width : (start + rows) * width] = _gathered(chunk, rows, offset, width)
        start += rows
        del chunk
    return columns, last


def _first_item(
    row: int, keys: tuple[array[int], array[int], array[int]], masks: array[int],
    values: dict[int, array[float]],
) -> dict[str, int | float]:  # fmt: skip
    devices, times, received = keys
    item: dict[str, int | float] = {
        "time": times[row] + POSTGRES_EPOCH_US,
        "device_id": devices[row],
        "received_at": received[row] + POSTGRES_EPOCH_US,
    }
    mask = masks[row]
    for bit, name in enumerate(MEASUREMENT_VALUE_FIELDS):
        if not mask >> bit & 1:
            item[name] = values[_VALUES + 8 * bit][row]
    return item


class _Columns(Mapping[str, PlainColumn]):
    """The batch's columns, rows in `order`; each value column is handed over once (as
    `encode_plain_columns` asks for it) and dropped from here then."""

    def __init__(
        self,
        values: dict[int, array[float]],
        masks: array[int],
        order: _Reorder | None,
        keys: dict[str, array[int]],
    ) -> None:
        self._values, self._order, self._keys = values, order, keys
        masks = self._take(masks)
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
        values = self._take(self._values.pop(_VALUES + 8 * bit))
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
    data: Records, count: int, after: PushCursor, limit: int
) -> MeasurementBatch:
    """The batch in the stream (a list of chunks is emptied as it is read): rows whose times the protocol can carry go in the body (meter
    by meter, in time: neighbouring values differ least), the others are only passed by the
    cursor (and quarantined then, like the JSON path's)."""
    check_length(data, count)
    if not count:
        return MeasurementBatch(after, after, b"", 0, limit, None, None, 0, WireFormat.COLUMNAR)
    columns, last = _gather(data, count)
    times, received = columns.pop(_TIME), columns.pop(_RECEIVED)
    devices, masks = columns.pop(_DEVICE), columns.pop(_MASK)
    rows: Sequence[int] = range(count)
    if not (_carriable(times) and _carriable(received)):
        rows = [
            i
            for i, (t, r) in enumerate(zip(times, received, strict=True))
            if LOW_PG < t < HIGH_PG and LOW_PG < r < HIGH_PG
        ]
    sent = len(rows)
    first = None
    if sent:
        item = _first_item(rows[0], (devices, times, received), masks, columns)
        first = first_row_json(item)
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
    body = encode_plain_columns(sent, _Columns(columns, masks, order, keys))
    last_time = min(max(int(last[2]), LOW_PG), HIGH_PG) + POSTGRES_EPOCH_US
    end = PushCursor(int(last[0]), int(last[1]), datetime_from_micros(last_time))
    return MeasurementBatch(
        after, end, body, count, limit, newest, first, sent, WireFormat.COLUMNAR
    )
