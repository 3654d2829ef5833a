"""Batch schemas of the push protocol: the row structs and their field types, the batch types,
and what validating a batch yields.

A row's types and limits are what msgspec checks as it decodes a row into these structs (a JSON
body: `fleetcore.json_batch`; the columnar encoding checks the same limits on its columns,
`fleetcore.columnar_batch`); a sample's time must also lie in the `ValidationWindow`
(`window_reason`). Nothing is dropped silently: a bad row becomes a `Rejection` (index, reason,
the row's JSON text) and the rest of the batch goes on (`ParsedBatch`); a body that is unusable
as a whole is a `BatchFormatError` — HTTP 400, or 413 past a limit of `fleetcore.limits`
(`too_many_rows`, `too_many_rejections`).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Annotated, Generic, TypeVar

import msgspec

from fleetcore.error_codes import ErrorCode
from fleetcore.limits import MAX_BATCH_ROWS, MAX_REJECTED_ROWS

__all__ = [
    "MAX_ID",
    "MAX_VALUE",
    "MEASUREMENT_VALUE_FIELDS",
    "BatchFormatError",
    "BatchType",
    "DeviceRow",
    "Id",
    "MeasurementRow",
    "ParsedBatch",
    "Rejection",
    "SiteRow",
    "ValidationWindow",
    "too_many_rejections",
    "too_many_rows",
    "window_reason",
]


class BatchType(enum.StrEnum):
    SITES = "sites"
    DEVICES = "devices"
    MEASUREMENTS = "measurements"


class BatchFormatError(ValueError):
    """The body as a whole is unusable (not JSON, not UTF-8, no `items` list, over a limit)."""

    def __init__(self, code: ErrorCode, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


MAX_ID = 2**63 - 1
MAX_VALUE = 1e15

# Field types. Ids are PostgreSQL bigints; ids below 0 are not used by meter stacks.
Id = Annotated[int, msgspec.Meta(ge=0, le=MAX_ID)]
AwareTime = Annotated[datetime, msgspec.Meta(tz=True)]
# Finite by construction: JSON has no NaN/Infinity literals, and overflowing literals such as
# 1e999 are refused by the decoder. The bound keeps values meaningful for double precision maths.
Value = Annotated[float, msgspec.Meta(ge=-MAX_VALUE, le=MAX_VALUE)]
_NO_NUL = r"^[^\x00]*$"
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200, pattern=_NO_NUL)]
OptionalText = Annotated[str, msgspec.Meta(max_length=500, pattern=_NO_NUL)]
ShortText = Annotated[str, msgspec.Meta(min_length=1, max_length=100, pattern=_NO_NUL)]
TimeZone = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=_NO_NUL)]


class SiteRow(msgspec.Struct, frozen=True):
    id: Id
    name: Name
    timezone: TimeZone
    updated_at: AwareTime
    address: OptionalText | None = None


class DeviceRow(msgspec.Struct, frozen=True):
    id: Id
    site_id: Id
    serial_number: ShortText
    model: ShortText
    updated_at: AwareTime
    name: Name | None = None


MEASUREMENT_VALUE_FIELDS: tuple[str, ...] = (
    "v1", "v2", "v3", "v12", "v23", "v31",
    "i1", "i2", "i3", "i_n",
    "p1", "p2", "p3", "p_total",
    "q_total", "s_total", "pf_total", "freq",
    "energy_imp_kwh", "energy_exp_kwh", "energy_q_imp_kvarh", "energy_q_exp_kvarh",
    "thd_v", "thd_i",
)  # fmt: skip


class MeasurementRow(msgspec.Struct, frozen=True, gc=False):
    """One sample. Field order is the column order of storage (`fleetcore.json_columns` reads
    rows with `astuple`). Not tracked by the garbage collector (`gc=False`): its fields are
    times, ints and floats, which can hold no reference cycle, and a 5,000-row batch would
    otherwise add 5,000 objects to every collection while it is alive."""

    time: AwareTime
    device_id: Id
    received_at: AwareTime
    v1: Value | None = None
    v2: Value | None = None
    v3: Value | None = None
    v12: Value | None = None
    v23: Value | None = None
    v31: Value | None = None
    i1: Value | None = None
    i2: Value | None = None
    i3: Value | None = None
    i_n: Value | None = None
    p1: Value | None = None
    p2: Value | None = None
    p3: Value | None = None
    p_total: Value | None = None
    q_total: Value | None = None
    s_total: Value | None = None
    pf_total: Value | None = None
    freq: Value | None = None
    energy_imp_kwh: Value | None = None
    energy_exp_kwh: Value | None = None
    energy_q_imp_kvarh: Value | None = None
    energy_q_exp_kvarh: Value | None = None
    thd_v: Value | None = None
    thd_i: Value | None = None


Row = TypeVar("Row", SiteRow, DeviceRow, MeasurementRow)


@dataclass(frozen=True, slots=True)
class ValidationWindow:
    """Accepted range of sample times, relative to the server's clock at parse time."""

    now: datetime
    max_age: timedelta
    max_ahead: timedelta

    @property
    def earliest(self) -> datetime:
        return self.now - self.max_age

    @property
    def latest(self) -> datetime:
        return self.now + self.max_ahead


@dataclass(frozen=True, slots=True)
class Rejection:
    """A row refused by validation; `payload` is its JSON text, kept for the dead-letter table."""

    index: int
    reason: str
    payload: str


@dataclass(slots=True)
class ParsedBatch(Generic[Row]):
    """Rows that passed validation (in batch order) and those that did not.

    `ids_seen` holds every id that could be read from the batch, valid row or not: a full-set
    batch must not mark a site deleted just because this delivery of it was malformed.
    `duplicates` counts rows of a full-set batch whose id appeared again later in the batch
    (the last one wins). `first_time`/`last_time` bound the sample times of a measurement batch's
    valid rows (None otherwise).
    """

    rows: list[Row]
    rejections: list[Rejection] = field(default_factory=list)
    ids_seen: set[int] = field(default_factory=set)
    duplicates: int = 0
    first_time: datetime | None = None
    last_time: datetime | None = None

    @property
    def total(self) -> int:
        return len(self.rows) + len(self.rejections) + self.duplicates


def window_reason(row: MeasurementRow, window: ValidationWindow) -> str | None:
    if row.time < window.earliest:
        return f"time {row.time.isoformat()} is older than the accepted horizon ({window.earliest.isoformat()})"
    if row.time > window.latest:
        return f"time {row.time.isoformat()} is too far in the future (after {window.latest.isoformat()})"
    return None


def too_many_rows(rows: int) -> BatchFormatError:
    return BatchFormatError(
        ErrorCode.TOO_MANY_ROWS,
        f"{rows} rows or more: over the {MAX_BATCH_ROWS}-row limit of a batch",
    )


def too_many_rejections() -> BatchFormatError:
    return BatchFormatError(
        ErrorCode.TOO_MANY_REJECTIONS,
        f"more than {MAX_REJECTED_ROWS} rows of the batch are invalid: the batch is refused "
        "whole (send fewer rows at a time, or fix them)",
    )
