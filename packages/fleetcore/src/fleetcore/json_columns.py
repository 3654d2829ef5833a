"""A JSON measurement batch decoded into columns: what ingestd stores, built where it decodes.

`parse_measurement_columns` is `parse_batch` for a measurement body, handing back the valid rows
as `MeasurementColumns` (the columnar path's shape) instead of a list of `MeasurementRow`s: the
rows live only inside the decoding step, so storage, dirty marks and partition checks see one
shape for both encodings and run column-wise. The rows are validated exactly as before (msgspec
decodes the body into `MeasurementRow`s with their constraints; the same rejections, reasons
and window), then turned into columns in a few C-level passes per chunk of rows
(`columns_of_rows`).

A large body (32 KiB and more, ~100 rows) of valid rows (nearly every one) takes a shorter way
first (`fleetcore.json_text_time.text_time_columns`: times as text, values packed by `struct`,
the times read a column at a time); anything that way does not take whole goes the typed way,
whose rows say what is refused and why; where both take a body they give the same columns, bit
for bit (tests/fleetcore/test_json_columns.py).

A small body (under 32 KiB: a gateway's minute) decodes its rows the same way, times as text,
but reads each distinct time text once with msgspec (`fleetcore.json_small`): ~40 numpy calls
fewer than the typed rows' conversion, which cost 5-20 µs each inside a running ingestd.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import numpy as np
import numpy.typing as npt

from fleetcore.columnar import MeasurementColumns, datetime_from_micros, micros_from_datetime
from fleetcore.columnar_batch import ParsedColumns
from fleetcore.json_batch import decode_measurement_rows, parse_batch
from fleetcore.json_small import small_clean_columns, small_rows
from fleetcore.json_text_time import (
    TEXT_TIME_MIN_BYTES,
    key_value_columns,
    text_time_columns,
)
from fleetcore.json_text_time import cells as text_cells
from fleetcore.schemas import (
    MEASUREMENT_VALUE_FIELDS,
    BatchFormatError,
    BatchType,
    MeasurementRow,
    ValidationWindow,
)

__all__ = [
    "chunk_body",
    "clean_measurement_columns",
    "columns_of_rows",
    "edge_rows",
    "inside_window",
    "item_spans",
    "parse_measurement_columns",
    "text_time_columns",
]

Int64s = npt.NDArray[np.int64]

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
        cells = text_cells(part)
        values[:, start:end] = cells[:, 3:].T
        keys[0, start:end] = _micros(cells[:, 0])
        keys[1, start:end] = cells[:, 1]
        keys[2, start:end] = _micros(cells[:, 2])
    return key_value_columns(keys, values)


def inside_window(columns: MeasurementColumns, window: ValidationWindow) -> ParsedColumns | None:
    """The batch, when every sample time is inside the window and every `received_at` inside
    UTC's years 1-9999 (what `parse_batch` checks row by row, here on the µs columns); None
    when one is not."""
    times = columns.columns["time"].values
    received = columns.columns["received_at"].values
    first, last = int(times.min()), int(times.max())
    if not (
        first >= micros_from_datetime(window.earliest)
        and last <= micros_from_datetime(window.latest)
        and received.min() >= _MIN_MICROS
        and received.max() <= _MAX_MICROS
    ):
        return None
    return ParsedColumns(columns, [], datetime_from_micros(first), datetime_from_micros(last))


def clean_measurement_columns(
    body: bytes | bytearray, window: ValidationWindow
) -> ParsedColumns | None:
    """A JSON measurement body as columns when every row is valid and inside the window (nearly
    every batch); None for any other body, without finding out which rows are refused (the
    per-row work `parse_measurement_columns` then does). Raises `BatchFormatError` only for a
    body over the row limit."""
    if len(body) < TEXT_TIME_MIN_BYTES:
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
    return inside_window(columns, window)


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
