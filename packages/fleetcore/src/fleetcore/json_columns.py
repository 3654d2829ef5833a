"""A JSON measurement batch decoded into columns: what ingestd stores, built where it decodes.

`parse_measurement_columns` is `parse_batch` for a measurement body, handing back the valid rows
as `MeasurementColumns` (the columnar path's shape) instead of a list of `MeasurementRow`s: the
rows live only inside the decoding step, so storage, dirty marks and partition checks see one
shape for both encodings and run column-wise. The rows are validated exactly as before (msgspec
decodes the body into `MeasurementRow`s with their constraints; the same rejections, reasons
and window), then turned into columns in a few C-level passes per chunk of rows
(`columns_of_rows`).

A large body (32 KiB and more, ~100 rows) of valid rows (nearly every one) takes a shorter way
first (`text_time_columns`): msgspec decodes the rows with their times as text and their values
without bounds — one object fewer per time and no constraint check per value, a quarter of what
a row costs to decode — each row's id and values are packed into a binary record by `struct`
(C, no object per cell) and read by numpy as one matrix, the times are read a column at a time
(`fleetcore.rfc3339`), the bounds checked on the value matrix. Anything that way does not take whole (a time in another
form, a value out of bounds, an escape anywhere in the body, a row msgspec refuses) goes the
typed way, whose rows say what is refused and why; where both take a body they give the same
columns, bit for bit (tests/fleetcore/test_json_columns.py).

A small body (under 32 KiB: a gateway's minute) decodes its rows the same way, times as text,
but reads each distinct time text once with msgspec (`fleetcore.json_small`): ~40 numpy calls
fewer than the typed rows' conversion, which cost 5-20 µs each inside a running ingestd.
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

from fleetcore.columnar import (
    Column,
    MeasurementColumns,
    datetime_from_micros,
    micros_from_datetime,
)
from fleetcore.columnar_batch import ParsedColumns
from fleetcore.json_batch import check_item_bound, decode_measurement_rows, parse_batch
from fleetcore.json_small import small_clean_columns, small_rows, with_values
from fleetcore.limits import MAX_BATCH_ROWS
from fleetcore.rfc3339 import micros_of_texts
from fleetcore.schemas import (
    MAX_VALUE,
    MEASUREMENT_VALUE_FIELDS,
    BatchFormatError,
    BatchType,
    Id,
    MeasurementRow,
    ValidationWindow,
    too_many_rows,
)

__all__ = [
    "chunk_body",
    "clean_measurement_columns",
    "columns_of_rows",
    "edge_rows",
    "item_spans",
    "parse_measurement_columns",
    "text_time_columns",
]

Int64s = npt.NDArray[np.int64]

_WIDTH = 3 + len(MEASUREMENT_VALUE_FIELDS)  # MeasurementRow: time, device_id, received_at, values
_CHUNK = 1024
"""Rows turned into cells at a time: the object array of one chunk's cells (8 bytes per field)
is the only extra memory the conversion holds besides the columns themselves."""
_MIN_MICROS = micros_from_datetime(datetime.min.replace(tzinfo=UTC))
_MAX_MICROS = micros_from_datetime(datetime.max.replace(tzinfo=UTC))
_EXACT_SECONDS = 2.0**33
"""Below 2^33 s from the epoch (year 2242) neighbouring µs counts have distinct float64 second
counts, so a `datetime.timestamp()` (µs / 10^6, correctly rounded) gives its µs back."""


def _micros(times: npt.NDArray[np.object_]) -> Int64s:
    """Aware datetimes as µs since the epoch, exactly: from `datetime.timestamp()` (C, no
    timedelta per row) where that float gives the µs back (checked: the µs found divide back to
    the same bits), by timedelta arithmetic for any other."""
    seconds = np.fromiter(map(datetime.timestamp, times), np.float64, len(times))
    micros = np.rint(seconds * 1e6).astype(np.int64)
    exact = (np.abs(seconds) < _EXACT_SECONDS) & (micros.astype(np.float64) / 1e6 == seconds)
    for i in np.flatnonzero(~exact).tolist():
        micros[i] = micros_from_datetime(times[i])
    return micros


def _cells(part: Sequence[Any]) -> npt.NDArray[np.object_]:
    """One chunk of rows as a (rows, fields) object array, in `MeasurementRow`'s field order."""
    cells = np.fromiter(chain.from_iterable(map(astuple, part)), object, len(part) * _WIDTH)
    return cells.reshape(len(part), _WIDTH)


def columns_of_rows(rows: Sequence[MeasurementRow]) -> MeasurementColumns:
    """Validated rows as columns (keys as µs and ints, values as float64): per chunk, every
    field of every row into one object array (`astuple`, in `MeasurementRow`'s field order),
    the values out of it into one float64 matrix (None becomes NaN, which validation never lets
    through, so NaN marks the nulls), the times through `_micros`."""
    n = len(rows)
    if not n:
        return MeasurementColumns(0, {})
    values = np.empty((len(MEASUREMENT_VALUE_FIELDS), n), np.float64)
    keys = np.empty((3, n), np.int64)
    for start in range(0, n, _CHUNK):
        part = rows[start : start + _CHUNK]
        end = start + len(part)
        cells = _cells(part)
        values[:, start:end] = cells[:, 3:].T
        keys[0, start:end] = _micros(cells[:, 0])
        keys[1, start:end] = cells[:, 1]
        keys[2, start:end] = _micros(cells[:, 2])
    return _columns(keys, values)


def _columns(keys: Int64s, values: npt.NDArray[np.float64]) -> MeasurementColumns:
    """The batch of key rows (time, device_id, received_at) and value rows (NaN: null)."""
    columns: dict[str, Column] = {
        "time": Column(keys[0]),
        "device_id": Column(keys[1]),
        "received_at": Column(keys[2]),
    }
    return with_values(columns, values, keys.shape[1])


_TEXT_TIME_MIN_BYTES = 32 * 1024
"""Bodies from this size (~100 rows) read their time columns as text in numpy
(`fleetcore.rfc3339`: a few dozen calls whatever a column's length); smaller ones read each
distinct time text once (`fleetcore.json_small`)."""
_VALUES = len(MEASUREMENT_VALUE_FIELDS)
_TextTimeRow = msgspec.defstruct(
    "_TextTimeRow",
    [
        ("time", str),
        ("device_id", Id),
        ("received_at", str),
        *((field, float | None, None) for field in MEASUREMENT_VALUE_FIELDS),
    ],
    gc=False,
)
"""`MeasurementRow` with its times as text and its values unbounded, its fields in
`MeasurementRow`'s order — the order a pusher writes an item's keys, so msgspec finds each key
where it looks first (~0.04 µs/row less than the id and values first, bench/README.md's eighth
pass)."""
_RECORD = struct.Struct(f"=?q?{_VALUES}d")
"""A `_TextTimeRow`'s tuple as one native binary record: the texts as one byte of their truth
each, which is not read — so `struct` packs the tuple as it is, without a slice of it per row."""
_RECORD_DTYPE = np.dtype(
    [("time", "V1"), ("id", "=i8"), ("received_at", "V1"), ("values", "=f8", (_VALUES,))]
)
_TEXT_TIME_DECODER: msgspec.json.Decoder[Any] = msgspec.json.Decoder(
    msgspec.defstruct("_TextTimeBatch", [("items", list[_TextTimeRow])])  # type: ignore[valid-type]
)
_MIN_ITEM_BYTES = len(b'{"time":"","device_id":0,"received_at":""},')
"""The fewest bytes a `_TextTimeRow` can be decoded from (its three required fields; no
backslash, so no escapes): a body shorter than `MAX_BATCH_ROWS` of them cannot decode into more
rows than a batch may carry, and needs no item count (`check_item_bound`, a pass over the body
that cost ~0.17 µs per row of a 5,000-row batch) before the decode."""
_TIME, _RECEIVED_AT = attrgetter("time"), attrgetter("received_at")


def _text_time_part(
    part: Sequence[Any], values: npt.NDArray[np.float64], keys: Int64s, texts: npt.NDArray[Any]
) -> None:
    """One chunk of `_TextTimeRow`s into the columns (already sliced to the chunk): each row's
    id and values packed into one binary record in C (`struct`, from the row's `astuple`), the
    records read by numpy as one matrix — no Python-level object array of every cell, which took
    ~0.3 µs per row more — and the texts one attribute at a time. The tuples live one at a time:
    a chunk's worth held at once set off the garbage collector's passes. A chunk with a null
    (None, which `struct` does not pack) goes through the object array."""
    n = len(part)
    try:
        packed = b"".join(starmap(_RECORD.pack, map(astuple, part)))
    except (struct.error, OverflowError):
        cells = _cells(part)
        values[...] = cells[:, 3:].T
        keys[1] = cells[:, 1]
        texts[0] = cells[:, 0]
        texts[1] = cells[:, 2]
        return
    records = np.frombuffer(packed, _RECORD_DTYPE)
    values[...] = records["values"].T
    keys[1] = records["id"]
    texts[0] = np.fromiter(map(_TIME, part), object, n)
    texts[1] = np.fromiter(map(_RECEIVED_AT, part), object, n)


_SAMPLE = 64


def _distinct(texts: npt.NDArray[Any]) -> tuple[npt.NDArray[Any], npt.NDArray[np.intp] | None]:
    """The texts to read for a column, and where each row's text is among them (None: one
    each, in order): each distinct text once when at most a quarter of them are distinct (a
    batch's meters share their sample times: 5,000 rows of 20 meters hold 250 times; ~0.1
    µs/row less), a column of mostly distinct texts (`received_at`, one meter's times) whole.
    Reading a text costs a few dozen array passes per character; finding the distinct ones, a
    dict pass and a lookup per text — so the first `_SAMPLE` texts decide first whether to look
    (~0.08 µs/row lost on a column that turns out distinct)."""
    n = len(texts)
    if len(set(texts[:_SAMPLE].tolist())) * 4 > min(n, _SAMPLE):
        return texts, None
    listed = texts.tolist()
    distinct = dict.fromkeys(listed)
    if len(distinct) * 4 > n:
        return texts, None
    position = dict(zip(distinct, range(len(distinct)), strict=True))
    at = np.fromiter(map(position.__getitem__, listed), np.intp, n)
    return np.fromiter(distinct, object, len(distinct)), at


def _micros_of_columns(texts: npt.NDArray[Any]) -> Int64s | None:
    """`micros_of_texts` of each row of `texts` (the time and received_at columns), all read
    in one call (its few dozen array passes cost the same for a few texts as for thousands:
    one call instead of two is ~0.1 ms less per chunk of a streamed batch), each column's
    distinct texts once (`_distinct`)."""
    read = [_distinct(column) for column in texts]
    micros = micros_of_texts(np.concatenate([once for once, _ in read]))
    if micros is None:
        return None
    out = np.empty(texts.shape, np.int64)
    start = 0
    for row, (once, at) in enumerate(read):
        part = micros[start : start + len(once)]
        out[row] = part if at is None else part[at]
        start += len(once)
    return out


def text_time_columns(body: bytes | bytearray) -> MeasurementColumns | None:
    """The body's rows as columns when every row is valid and in the forms this way reads
    (see the module docstring); None for any other body. Whole-body limits raise as in
    `parse_batch`."""
    if body.find(b"\\") >= 0:
        return None
    if len(body) >= _MIN_ITEM_BYTES * MAX_BATCH_ROWS:
        check_item_bound(body)
    try:
        rows: list[Any] = _TEXT_TIME_DECODER.decode(body).items
    except (msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        return None
    n = len(rows)
    if n > MAX_BATCH_ROWS:
        raise too_many_rows(n)
    if not n:
        return MeasurementColumns(0, {})
    values = np.empty((len(MEASUREMENT_VALUE_FIELDS), n), np.float64)
    keys = np.empty((3, n), np.int64)
    texts = np.empty((2, n), object)
    for start in range(0, n, _CHUNK):
        end = min(start + _CHUNK, n)
        part = rows[start:end]
        _text_time_part(part, values[:, start:end], keys[:, start:end], texts[:, start:end])
    del rows
    micros = _micros_of_columns(texts)
    if micros is None:
        return None
    keys[0], keys[2] = micros
    del texts, micros
    if (np.abs(values) > MAX_VALUE).any():  # NaN (a null) compares false
        return None
    return _columns(keys, values)


def _within(columns: MeasurementColumns, window: ValidationWindow) -> bool:
    """Every sample time inside the window and every `received_at` inside UTC's years 1-9999
    (what `parse_batch` checks row by row), on the µs columns."""
    times = columns.columns["time"].values
    received = columns.columns["received_at"].values
    return bool(
        times.min() >= micros_from_datetime(window.earliest)
        and times.max() <= micros_from_datetime(window.latest)
        and received.min() >= _MIN_MICROS
        and received.max() <= _MAX_MICROS
    )


def _inside(columns: MeasurementColumns) -> ParsedColumns:
    """A batch whose rows are all valid and inside the window."""
    times = columns.columns["time"].values
    first, last = int(times.min()), int(times.max())
    return ParsedColumns(columns, [], datetime_from_micros(first), datetime_from_micros(last))


def clean_measurement_columns(
    body: bytes | bytearray, window: ValidationWindow
) -> ParsedColumns | None:
    """A JSON measurement body as columns when every row is valid and inside the window (nearly
    every batch); None for any other body, without finding out which rows are refused (the
    per-row work `parse_measurement_columns` then does). Raises `BatchFormatError` only for a
    body over the row limit."""
    if len(body) < _TEXT_TIME_MIN_BYTES:
        rows = small_rows(body)
        if rows is not None:
            if not rows:
                return ParsedColumns(MeasurementColumns(0, {}))
            return small_clean_columns(rows, window)
        columns = None
    else:
        columns = text_time_columns(body)
    if columns is None:
        valid = decode_measurement_rows(body)
        if valid is None:
            return None
        columns = columns_of_rows(valid)
        del valid
    if not columns.rows:
        return ParsedColumns(columns)
    return _inside(columns) if _within(columns, window) else None


def parse_measurement_columns(body: bytes | bytearray, window: ValidationWindow) -> ParsedColumns:
    """Decode and validate a JSON measurement body (`parse_batch`'s rules and errors) into
    columns. A batch of valid rows inside the window (nearly every one) is checked on its
    columns; any other takes `parse_batch`'s row-by-row path, which says which rows are refused
    and why."""
    clean = clean_measurement_columns(body, window)
    if clean is not None:
        return clean
    parsed = parse_batch(body, BatchType.MEASUREMENTS, window)
    rows: list[MeasurementRow] = parsed.rows
    columns = columns_of_rows(rows)
    del rows
    parsed.rows = []
    return ParsedColumns(columns, parsed.rejections, parsed.first_time, parsed.last_time)


_ENVELOPE_HEAD = b'{"items":['
_ENVELOPE_TAIL = b"]}"
_ITEM_BREAK = b"},{"


def item_spans(
    body: bytes | bytearray, first: int, most: int, growth: int = 2
) -> list[tuple[int, int]] | None:
    """The body's items cut into runs of about `first` bytes (the first run), each next one
    `growth` times the one before up to `most` bytes (a last run under half of the one it
    would be joins the one before), as (start, end) byte spans of `body` (`chunk_body` makes
    each a body of its own), or None when the body is not one this cut is sure of — exactly
    `{"items":[ … ]}` with no other `[` or `]` and no backslash — or gives a single run. Each
    cut is at a `},{`. Outside strings, that is between two items (only an array holds `,{`,
    and there is one array); inside a string (which cannot hold a quote, having no backslash)
    it leaves the chunk before it ending in an unterminated string, which does not decode — so
    when every chunk decodes, every cut was between items and the chunks hold the body's items,
    in order."""
    if first < 1 or most < 1 or growth < 1:
        return None
    if not body.startswith(_ENVELOPE_HEAD) or not body.endswith(_ENVELOPE_TAIL):
        return None
    start, end = len(_ENVELOPE_HEAD), len(body) - len(_ENVELOPE_TAIL)
    # find (memchr), not count: a pass at memory speed
    if body.find(b"[", start) >= 0 or body.find(b"]", start) != end or body.find(b"\\") >= 0:
        return None
    spans = []
    begin, size = start, first
    while begin + size < end - size // 2:
        at = body.find(_ITEM_BREAK, begin + size, end)
        if at < 0:
            break
        spans.append((begin, at + 1))
        begin = at + 2
        size = min(size * growth, most)
    spans.append((begin, end))
    return spans if len(spans) > 1 else None


def chunk_body(body: bytes | bytearray, span: tuple[int, int]) -> bytes:
    """The items of `span` (from `item_spans`) as a measurement body of their own (one copy:
    the span is a view of `body`, not a slice of it copied once more by the join)."""
    return b"".join((_ENVELOPE_HEAD, memoryview(body)[span[0] : span[1]], _ENVELOPE_TAIL))


def edge_rows(
    body: bytes | bytearray, spans: Sequence[tuple[int, int]], window: ValidationWindow
) -> tuple[MeasurementRow, MeasurementRow] | None:
    """The first and the last item of a body cut by `item_spans`, as valid rows inside the
    window, or None: either is not (the batch then has a refused row, or a cut that was not
    between items). Two small decodes, whatever the body's size (what a stream of the chunks
    needs before the first chunk is decoded: the keys of an obvious re-delivery, the weeks)."""
    first_start, first_end = spans[0]
    last_start, last_end = spans[-1]
    cut = body.find(_ITEM_BREAK, first_start, first_end)
    head = (first_start, first_end if cut < 0 else cut + 1)
    cut = body.rfind(_ITEM_BREAK, last_start, last_end)
    tail = (last_start if cut < 0 else cut + 2, last_end)
    rows = []
    for span in (head, tail):
        try:
            decoded = decode_measurement_rows(chunk_body(body, span))
        except BatchFormatError:
            return None
        if decoded is None or len(decoded) != 1:
            return None
        row = decoded[0]
        if not window.earliest <= row.time <= window.latest:
            return None
        rows.append(row)
    return rows[0], rows[1]
