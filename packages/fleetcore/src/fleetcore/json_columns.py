"""A JSON measurement batch decoded into columns: what ingestd stores, built where it decodes.

`parse_measurement_columns` is `parse_batch` for a measurement body, handing back the valid rows
as `MeasurementColumns` (the columnar path's shape) instead of a list of `MeasurementRow`s: the
rows live only inside the decoding step, so storage, dirty marks and partition checks see one
shape for both encodings and run column-wise. The rows are validated exactly as before (msgspec
decodes the body into `MeasurementRow`s with their constraints; the same rejections, reasons
and window), then turned into columns in a few C-level passes per chunk of rows
(`columns_of_rows`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from itertools import chain

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
from fleetcore.schemas import (
    MEASUREMENT_VALUE_FIELDS,
    BatchType,
    MeasurementRow,
    ValidationWindow,
    decode_measurement_rows,
    parse_batch,
)

__all__ = ["columns_of_rows", "parse_measurement_columns"]

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
        cells = np.fromiter(chain.from_iterable(map(astuple, part)), object, len(part) * _WIDTH)
        cells = cells.reshape(len(part), _WIDTH)
        values[:, start:end] = cells[:, 3:].T
        keys[0, start:end] = _micros(cells[:, 0])
        keys[1, start:end] = cells[:, 1]
        keys[2, start:end] = _micros(cells[:, 2])
    nulls: npt.NDArray[np.bool_] = np.isnan(values)
    columns: dict[str, Column] = {
        "time": Column(keys[0]),
        "device_id": Column(keys[1]),
        "received_at": Column(keys[2]),
    }
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


def parse_measurement_columns(body: bytes | bytearray, window: ValidationWindow) -> ParsedColumns:
    """Decode and validate a JSON measurement body (`parse_batch`'s rules and errors) into
    columns. A batch of valid rows inside the window (nearly every one) is checked on its
    columns; any other takes `parse_batch`'s row-by-row path, which says which rows are refused
    and why."""
    valid = decode_measurement_rows(body)
    if valid is not None:
        columns = columns_of_rows(valid)
        del valid
        if not columns.rows:
            return ParsedColumns(columns)
        if _within(columns, window):
            times = columns.columns["time"].values
            first, last = int(times.min()), int(times.max())
            return ParsedColumns(
                columns, [], datetime_from_micros(first), datetime_from_micros(last)
            )
    parsed = parse_batch(body, BatchType.MEASUREMENTS, window)
    rows: list[MeasurementRow] = parsed.rows
    columns = columns_of_rows(rows)
    del rows
    parsed.rows = []
    return ParsedColumns(columns, parsed.rejections, parsed.first_time, parsed.last_time)
