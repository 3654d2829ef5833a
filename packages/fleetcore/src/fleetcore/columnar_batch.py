"""Per-row validation of a columnar measurement batch: the JSON path's rules, column-wise.

A row of a columnar batch is refused for exactly what refuses it in a JSON batch (the limits
live in `fleetcore.schemas`: ids 0…2⁶³-1, values finite within ±10¹⁵, times within the
validation window), and the refusal looks the same: a `Rejection` with the row's index in the
body, the reason msgspec gives when that row is checked against `MeasurementRow`, and the row as
JSON text for the dead-letter table. The checks run on whole columns; only refused rows are
looked at one by one, so a clean batch costs a few numpy comparisons per column.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import msgspec
import numpy as np
import numpy.typing as npt

from fleetcore.columnar import (
    KEY_COLUMNS,
    MeasurementColumns,
    datetime_from_micros,
    decode_with_extremes,
    micros_from_datetime,
)
from fleetcore.columnar_small import Extremes
from fleetcore.limits import MAX_REJECTED_ROWS
from fleetcore.schemas import (
    MAX_ID,
    MAX_VALUE,
    MeasurementRow,
    Rejection,
    ValidationWindow,
    too_many_rejections,
    window_reason,
)

__all__ = ["ParsedColumns", "check_rows", "parse_columnar_batch"]

_MIN_MICROS = micros_from_datetime(datetime.min.replace(tzinfo=UTC))
_MAX_MICROS = micros_from_datetime(datetime.max.replace(tzinfo=UTC))


@dataclass(slots=True)
class ParsedColumns:
    """Rows that passed validation (`valid`, in body order) and those that did not."""

    valid: MeasurementColumns
    rejections: list[Rejection] = field(default_factory=list)
    first_time: datetime | None = None
    last_time: datetime | None = None

    @property
    def total(self) -> int:
        return self.valid.rows + len(self.rejections)

    def to_rows(self) -> list[MeasurementRow]:
        """The valid rows as `MeasurementRow`s (what the JSON path yields; tests compare both)."""
        return [
            msgspec.convert(_row(self.valid, i)[0], MeasurementRow) for i in range(self.valid.rows)
        ]


def _row(batch: MeasurementColumns, index: int) -> tuple[dict[str, Any], str | None]:
    """Row `index` as a protocol item, and the reason when a time cannot be a datetime."""
    item: dict[str, Any] = {}
    reason = None
    for name, column in batch.columns.items():
        if column.nulls is not None and column.nulls[index]:
            continue
        value = column.values[index].item()
        if name in ("time", "received_at"):
            try:
                value = datetime_from_micros(value)
            except OverflowError:
                reason = reason or (
                    f"Expected a time within years 1-9999, got {value} µs since 1970 - at `$.{name}`"
                )
        item[name] = value
    return item, reason


def _payload(item: dict[str, Any]) -> str:
    shown = {
        k: repr(v) if isinstance(v, float) and not math.isfinite(v) else v for k, v in item.items()
    }
    return msgspec.json.encode(shown).decode()


def _reason(item: dict[str, Any], window: ValidationWindow) -> str:
    for name, value in item.items():
        if isinstance(value, float) and not math.isfinite(value):
            return f"Expected a finite `float`, got {value!r} - at `$.{name}`"
    try:
        row = msgspec.convert(item, MeasurementRow)
    except msgspec.ValidationError as exc:
        return str(exc)
    return window_reason(row, window) or "row refused"


def _bad_rows(batch: MeasurementColumns, window: ValidationWindow) -> npt.NDArray[np.bool_]:
    bad = np.zeros(batch.rows, np.bool_)
    for name in KEY_COLUMNS:
        column = batch.columns[name]
        if column.nulls is not None:
            bad |= column.nulls
    device = batch.columns["device_id"].values
    bad |= (device < 0) | (device > MAX_ID)
    received = batch.columns["received_at"].values
    bad |= (received < _MIN_MICROS) | (received > _MAX_MICROS)
    time = batch.columns["time"].values  # the window lies within years 1-9999
    bad |= (time < micros_from_datetime(window.earliest)) | (
        time > micros_from_datetime(window.latest)
    )
    fields = [c for name, c in batch.columns.items() if name not in KEY_COLUMNS]
    if fields:  # one matrix: per-column numpy calls are most of a small batch's checks
        values = np.array([c.values for c in fields], np.float64)
        ok = np.abs(values) <= MAX_VALUE  # False for NaN
        for i, column in enumerate(fields):
            if column.nulls is not None:
                ok[i] |= column.nulls
        bad |= ~ok.all(axis=0)
    return bad


def _clean(extremes: Extremes, window: ValidationWindow) -> bool:
    """Whether a batch with these extremes has no refused row (`_bad_rows` would find none)."""
    (time_low, device_low, received_low), (time_high, device_high, received_high) = (
        extremes.low,
        extremes.high,
    )
    return (
        extremes.values_within
        and device_low >= 0
        and device_high <= MAX_ID
        and received_low >= _MIN_MICROS
        and received_high <= _MAX_MICROS
        and time_low >= micros_from_datetime(window.earliest)
        and time_high <= micros_from_datetime(window.latest)
    )


def parse_columnar_batch(
    body: bytes | bytearray | memoryview, window: ValidationWindow
) -> ParsedColumns:
    """Decode and validate a columnar body; `BatchFormatError` only for whole-body problems.
    A small batch whose extremes pass (nearly every one) skips the row checks."""
    batch, extremes = decode_with_extremes(body)
    if not batch.rows:
        return ParsedColumns(batch)
    if extremes is not None and _clean(extremes, window):
        return ParsedColumns(
            batch,
            [],
            first_time=datetime_from_micros(extremes.low[0]),
            last_time=datetime_from_micros(extremes.high[0]),
        )
    return check_rows(batch, window)


def check_rows(batch: MeasurementColumns, window: ValidationWindow) -> ParsedColumns:
    """A decoded batch validated row by row (on whole columns): the valid rows, and a
    `Rejection` for each refused one."""
    if not batch.rows:
        return ParsedColumns(batch)
    bad = _bad_rows(batch, window)
    rejections = []
    if np.count_nonzero(bad) > MAX_REJECTED_ROWS:
        raise too_many_rejections()
    if bad.any():
        for index in np.flatnonzero(bad).tolist():
            item, reason = _row(batch, index)
            rejections.append(Rejection(index, reason or _reason(item, window), _payload(item)))
        batch = batch.take(~bad)
    if not batch.rows:
        return ParsedColumns(batch, rejections)
    times = batch.columns["time"].values
    return ParsedColumns(
        batch,
        rejections,
        first_time=datetime_from_micros(int(times.min())),
        last_time=datetime_from_micros(int(times.max())),
    )
