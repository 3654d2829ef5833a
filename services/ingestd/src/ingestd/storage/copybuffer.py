"""PostgreSQL's binary COPY stream of a measurement batch in the stored layout, built with numpy.

psycopg's `write_row` turns every value into bytes one by one (~1 µs per 27-value row); a batch
held as columns is laid out at once: one fixed-size record per row (field count, then per field
its length and big-endian value), written column by column into a structured array. Each value
becomes two fields (`storage.layout`): its integer steps (int4 or int8) and its exact double,
one of them null. Fields null in every row take 4 bytes (length -1); a field null in some rows
is laid out in full and the value bytes of its null cells are cut out afterwards (one boolean
mask over the buffer). Format: "COPY — Binary Format" in the PostgreSQL manual; timestamps are
µs since 2000-01-01.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from fleetcore import MEASUREMENT_VALUE_FIELDS, MeasurementColumns
from fleetcore.resolution import RESOLUTIONS

from ingestd.storage.layout import scaled_column, split_column

__all__ = ["COPY_COLUMNS", "StoredField", "copy_stream", "stored_fields"]

COPY_COLUMNS: tuple[str, ...] = (
    "time",
    "device_id",
    "received_at",
    *(scaled_column(f) for f in MEASUREMENT_VALUE_FIELDS),
    *MEASUREMENT_VALUE_FIELDS,
    "customer_id",
)
"""The stored table's columns in the order of the stream (and of every statement that lists them)."""

_SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + bytes(8)  # signature, flags, header extension length
_TRAILER = b"\xff\xff"
_POSTGRES_EPOCH_US = 946_684_800_000_000  # 2000-01-01T00:00:00Z in µs since 1970
_TIMES = ("time", "received_at")
_DTYPES = {"integer": ">i4", "bigint": ">i8"}


@dataclass(frozen=True, slots=True)
class StoredField:
    """One column of the stored row: big-endian dtype, values (None: null in every row), nulls."""

    name: str
    dtype: str
    values: npt.NDArray[np.generic] | None
    nulls: npt.NDArray[np.bool_] | None


def _field(
    name: str, dtype: str, values: npt.NDArray[np.generic], nulls: npt.NDArray[np.bool_]
) -> StoredField:
    if nulls.all():
        return StoredField(name, dtype, None, None)
    return StoredField(name, dtype, values, nulls if nulls.any() else None)


def stored_fields(batch: MeasurementColumns, customer_id: int) -> list[StoredField]:
    """The batch's columns as the stored row's fields, in `COPY_COLUMNS` order."""
    rows = batch.rows
    fields = [
        StoredField(name, ">i8", batch.columns[name].values, None)
        for name in ("time", "device_id", "received_at")
    ]
    scaled, exact = [], []
    for name in MEASUREMENT_VALUE_FIELDS:
        column = batch.columns.get(name)
        resolution = RESOLUTIONS[name]
        dtype = _DTYPES[resolution.storage_type]
        if column is None or (column.nulls is not None and bool(column.nulls.all())):
            scaled.append(StoredField(scaled_column(name), dtype, None, None))
            exact.append(StoredField(name, ">f8", None, None))
            continue
        split = split_column(column.values.astype(np.float64, copy=False), column.nulls, resolution)
        scaled.append(_field(scaled_column(name), dtype, split.scaled, split.scaled_nulls))
        exact.append(_field(name, ">f8", split.exact, split.exact_nulls))
    tail = StoredField("customer_id", ">i8", np.full(rows, customer_id, np.int64), None)
    return [*fields, *scaled, *exact, tail]


def copy_stream(batch: MeasurementColumns, customer_id: int) -> bytes:
    """The complete binary COPY stream (header, one tuple per row, trailer) of `batch`'s rows in
    the order of `COPY_COLUMNS`; every key column must be non-null in every row."""
    fields = stored_fields(batch, customer_id)
    layout: list[tuple[str, str]] = [("count", ">i2")]
    for f in fields:
        layout.append((f"{f.name}_len", ">i4"))
        if f.values is not None:
            layout.append((f.name, f.dtype))
    dtype = np.dtype(layout)
    records = np.empty(batch.rows, dtype)
    records["count"] = len(fields)
    partial: list[tuple[str, npt.NDArray[np.bool_], int]] = []
    for f in fields:
        if f.values is None:
            records[f"{f.name}_len"] = -1
            continue
        size = np.dtype(f.dtype).itemsize
        records[f"{f.name}_len"] = size
        records[f.name] = f.values - _POSTGRES_EPOCH_US if f.name in _TIMES else f.values
        if f.nulls is not None:
            records[f"{f.name}_len"][f.nulls] = -1
            partial.append((f.name, f.nulls, size))
    if not partial:
        return _SIGNATURE + records.tobytes() + _TRAILER
    flat = records.view(np.uint8).reshape(batch.rows, dtype.itemsize)
    keep = np.ones(flat.shape, np.bool_)
    for name, nulls, size in partial:
        offset = dtype.fields[name][1] if dtype.fields else 0
        keep[nulls, offset : offset + size] = False
    return _SIGNATURE + flat[keep].tobytes() + _TRAILER
