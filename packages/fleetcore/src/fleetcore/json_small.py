"""A small JSON measurement batch (a gateway's minute: ~27 rows) decoded into columns in a
handful of numpy calls (`small_clean_columns`, `fleetcore.json_columns`' small path).

Inside a running ingestd every numpy call costs 5-20 µs (between two requests PostgreSQL and
the event loop evict the caches), so a 27-row batch pays per call, not per row: the typed rows'
conversion (`json_columns.columns_of_rows`) made ~40 calls, two dozen of them turning the two
time columns' `datetime`s into µs. Here the rows are decoded with their times as text
(`_SmallRow`: no `datetime` per time; the id and values typed and bounded as `MeasurementRow`'s,
checked by msgspec as it decodes), the ids and values packed into binary records (`struct`, as
the large bodies' way does) read as one matrix in one copy, and each *distinct* time text read
once by msgspec itself as the typed rows read it (`AwareTime`: the same parser, so the same
texts accepted and the same instants) — a gateway's minute holds one or a few distinct texts.
The window and the time span are checked on those few µs counts in Python.

The answer is the typed way's, bit for bit: a body this way decodes whole is one the typed way
decodes whole, with the same columns; one with a time that is not an aware time or outside the
window is one the typed way leaves to the row-by-row path too (a body it cannot decode whole,
or with a backslash, `json_columns` gives the typed way; tests/fleetcore/test_small_json.py
holds both to the same columns and verdicts).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from datetime import UTC, datetime
from itertools import chain, starmap
from operator import attrgetter
from typing import Any

import msgspec
import numpy as np
import numpy.typing as npt
from msgspec.structs import astuple

from fleetcore.columnar import Column, MeasurementColumns, datetime_from_micros
from fleetcore.columnar_batch import ParsedColumns
from fleetcore.columnar_layout import micros_from_datetime
from fleetcore.limits import MAX_BATCH_ROWS
from fleetcore.schemas import (
    MEASUREMENT_VALUE_FIELDS,
    AwareTime,
    Id,
    ValidationWindow,
    Value,
    too_many_rows,
)

__all__ = ["RECORD", "RECORD_DTYPE", "small_clean_columns", "small_rows"]

_VALUES = len(MEASUREMENT_VALUE_FIELDS)
RECORD = struct.Struct(f"=q{_VALUES}d??")
"""A text-time row's tuple (`json_columns`' `_TextTimeRow`: the id, the values, then the two
texts) as one native binary record: the texts as two bytes of their truth, which are not read —
so `struct` packs the tuple as it is, without a slice of it per row."""
RECORD_DTYPE = np.dtype([("id", "=i8"), ("values", "=f8", (_VALUES,)), ("texts", "V2")])
_TIME, _RECEIVED_AT, _DEVICE_ID = (
    attrgetter("time"),
    attrgetter("received_at"),
    attrgetter("device_id"),
)


def text_time_row(name: str, value: Any) -> type[msgspec.Struct]:
    """`MeasurementRow` with its times as text, in `RECORD`'s order: the id, the values (of type
    `value`, null by default), the two texts last."""
    return msgspec.defstruct(
        name,
        [
            ("device_id", Id),
            *((field, value | None, None) for field in MEASUREMENT_VALUE_FIELDS),
            ("time", str),
            ("received_at", str),
        ],
        kw_only=True,  # the required times after the values' defaults
        gc=False,
    )


_SmallRow = text_time_row("_SmallRow", Value)
"""`MeasurementRow` with its times as text, in `RECORD`'s order: the id and the values (bounded
as `MeasurementRow`'s: msgspec checks them as it decodes, no numpy pass), the two texts last."""
_SMALL_DECODER: msgspec.json.Decoder[Any] = msgspec.json.Decoder(
    msgspec.defstruct("_SmallBatch", [("items", list[_SmallRow])])  # type: ignore[valid-type]
)
_AWARE_TIMES: msgspec.json.Decoder[list[datetime]] = msgspec.json.Decoder(list[AwareTime])
_MIN_MICROS = micros_from_datetime(datetime.min.replace(tzinfo=UTC))
_MAX_MICROS = micros_from_datetime(datetime.max.replace(tzinfo=UTC))


def _micros_of_texts(texts: list[str]) -> dict[str, int] | None:
    """Each distinct text's µs since the epoch, read as `MeasurementRow`'s `AwareTime` reads it
    (one msgspec decode of the distinct texts), or None when one is not an aware time."""
    distinct = list(dict.fromkeys(texts))
    try:
        times = _AWARE_TIMES.decode(msgspec.json.encode(distinct))
    except msgspec.ValidationError:
        return None
    return dict(zip(distinct, map(micros_from_datetime, times), strict=True))


def _values(rows: Sequence[Any]) -> tuple[npt.NDArray[np.float64], bool]:
    """The rows' values as a (fields, rows) float64 matrix, NaN where null, and whether any is:
    packed as binary records in C when none is (`struct` packs no None) and read as the matrix
    in one copy, else through an object array of every cell."""
    n = len(rows)
    try:
        packed = b"".join(starmap(RECORD.pack, map(astuple, rows)))
    except (struct.error, OverflowError):
        cells = np.fromiter(chain.from_iterable(map(astuple, rows)), object, n * (3 + _VALUES))
        matrix = cells.reshape(n, 3 + _VALUES)[:, 1 : 1 + _VALUES].T.astype(np.float64)
        return matrix, True
    # the records' values, a field a row: 8 bytes into each record, a record apart
    fields = np.ndarray((_VALUES, n), np.float64, packed, 8, (8, RECORD.size))
    return fields.copy(), False


def _columns(
    keys: npt.NDArray[np.int64], values: npt.NDArray[np.float64], nullable: bool
) -> MeasurementColumns:
    """`json_text_time.key_value_columns`' columns: the keys, then each value field present in a
    row at least, its nulls where it has some (values 0 there)."""
    n = keys.shape[1]
    columns: dict[str, Column] = {
        "time": Column(keys[0]),
        "device_id": Column(keys[1]),
        "received_at": Column(keys[2]),
    }
    if not nullable:
        for name, row in zip(MEASUREMENT_VALUE_FIELDS, values, strict=True):
            columns[name] = Column(row)
        return MeasurementColumns(n, columns)
    return with_values(columns, values, n)


def with_values(
    columns: dict[str, Column], values: npt.NDArray[np.float64], n: int
) -> MeasurementColumns:
    """The batch of `n` rows: `columns` (its keys') and the value rows of `values` (a field a row,
    NaN where null: set to 0 under the column's null mask); a field null in every row is left
    out."""
    nulls: npt.NDArray[np.bool_] = np.isnan(values)
    counts: list[int] = np.count_nonzero(nulls, axis=1).tolist()
    for i, name in enumerate(MEASUREMENT_VALUE_FIELDS):
        if counts[i] == n:
            continue
        if counts[i]:
            values[i][nulls[i]] = 0.0
            columns[name] = Column(values[i], nulls[i])
        else:
            columns[name] = Column(values[i])
    return MeasurementColumns(n, columns)


def small_rows(body: bytes | bytearray) -> list[Any] | None:
    """A small body's items as text-time rows (`_SmallRow`), or None: a backslash in the body
    (its texts would need unescaping), or an item that is not one (the typed way then says
    which and why). Raises as `parse_batch` past `MAX_BATCH_ROWS` rows."""
    if body.find(b"\\") >= 0:
        return None
    try:
        rows: list[Any] = _SMALL_DECODER.decode(body).items
    except (msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        return None
    if len(rows) > MAX_BATCH_ROWS:
        raise too_many_rows(len(rows))
    return rows


def small_clean_columns(rows: Sequence[Any], window: ValidationWindow) -> ParsedColumns | None:
    """`small_rows`' rows (at least one) as the batch's columns when every row is inside the
    window; None when one is not, or a time is not an aware time (the typed way says the same)."""
    times = list(map(_TIME, rows))
    received = list(map(_RECEIVED_AT, rows))
    micros = _micros_of_texts(times + received)
    if micros is None:
        return None
    time_micros = list(map(micros.__getitem__, times))
    received_micros = list(map(micros.__getitem__, received))
    first, last = min(time_micros), max(time_micros)
    if (
        first < micros_from_datetime(window.earliest)
        or last > micros_from_datetime(window.latest)
        or min(received_micros) < _MIN_MICROS
        or max(received_micros) > _MAX_MICROS
    ):
        return None
    values, nullable = _values(rows)
    keys = np.array([time_micros, list(map(_DEVICE_ID, rows)), received_micros], np.int64)
    columns = _columns(keys, values, nullable)
    return ParsedColumns(columns, [], datetime_from_micros(first), datetime_from_micros(last))
