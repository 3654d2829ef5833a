"""PostgreSQL's binary COPY stream of a measurement batch in the stored layout, built with numpy.

psycopg's `write_row` turns every value into bytes one by one (~1 µs per 27-value row); a batch
held as columns is laid out at once: one fixed-size record per row (field count, then per field
its length and big-endian value) in a structured array, every record first filled from one
template (the count and each field's length) and then the values written column by column. Each
value becomes two fields (`storage.layout`): its integer steps (int4 or int8) and its exact
double, one of them null; the split runs on all value columns at once. Fields null in every row
are left out of the stream and of its COPY statement's column list (`CopyStream.columns`; they
take their default, NULL): a batch at its resolutions has 24 such exact-double columns, and
PostgreSQL's COPY costs less the fewer fields a row has. Fields null in some rows (a value finer than its resolution in a few
rows makes both halves of it so) give rows of a few shapes: each shape's rows are laid out as
fixed-size records of their own, one block after the other (no per-byte work); a batch of many
shapes is laid out in full and the value bytes of its null cells cut out with one boolean mask.
Format: "COPY — Binary Format" in the PostgreSQL manual; timestamps are µs since 2000-01-01.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from fleetcore import MEASUREMENT_VALUE_FIELDS, MeasurementColumns
from fleetcore.resolution import RESOLUTIONS

from ingestd.storage.layout import scaled_column, split_columns

__all__ = [
    "COPY_COLUMNS",
    "COPY_HEADER",
    "COPY_TRAILER",
    "CopyStream",
    "StoredField",
    "copy_stream",
    "stored_fields",
]

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
COPY_TRAILER = _TRAILER
COPY_HEADER = _SIGNATURE
_POSTGRES_EPOCH_US = 946_684_800_000_000  # 2000-01-01T00:00:00Z in µs since 1970
_TIMES = ("time", "received_at")
_DTYPES = {"integer": ">i4", "bigint": ">i8"}
_TYPES: dict[str, str] = {
    **dict.fromkeys(("time", "device_id", "received_at", "customer_id"), ">i8"),
    **{scaled_column(f): _DTYPES[RESOLUTIONS[f].storage_type] for f in MEASUREMENT_VALUE_FIELDS},
    **dict.fromkeys(MEASUREMENT_VALUE_FIELDS, ">f8"),
}
_SIZES = {name: np.dtype(kind).itemsize for name, kind in _TYPES.items()}
Index = npt.NDArray[np.intp]


@dataclass(frozen=True, slots=True)
class StoredField:
    """One column of the stored row: big-endian dtype, values (None: null in every row), nulls."""

    name: str
    dtype: str
    values: npt.NDArray[np.generic] | None
    nulls: npt.NDArray[np.bool_] | None


def _field(
    name: str,
    dtype: str,
    values: npt.NDArray[np.generic],
    nulls: npt.NDArray[np.bool_],
    count: int,
    rows: int,
) -> StoredField:
    """`count`: how many of the field's `rows` cells `nulls` marks."""
    if count == rows:
        return StoredField(name, dtype, None, None)
    return StoredField(name, dtype, values, nulls if count else None)


def stored_fields(batch: MeasurementColumns, customer_id: int) -> list[StoredField]:
    """The batch's columns as the stored row's fields, in `COPY_COLUMNS` order (the null counts
    of all fields taken at once: per-field numpy calls are most of a small batch's cost)."""
    rows = batch.rows
    keys = [
        StoredField(name, ">i8", batch.columns[name].values, None)
        for name in ("time", "device_id", "received_at")
    ]
    present = [
        name
        for name in MEASUREMENT_VALUE_FIELDS
        if (c := batch.columns.get(name)) is not None
        and not (c.nulls is not None and c.nulls.all())
    ]
    scaled = {}
    exact = {}
    if present:
        values = np.empty((len(present), rows), np.float64)
        nulls = np.zeros((len(present), rows), np.bool_)
        for i, name in enumerate(present):
            column = batch.columns[name]
            values[i] = column.values
            if column.nulls is not None:
                nulls[i] = column.nulls
        ints, whole = split_columns(values, nulls, [RESOLUTIONS[n] for n in present])
        not_scaled = ~whole
        not_exact = whole | nulls
        scaled_nulls: list[int] = np.count_nonzero(not_scaled, axis=1).tolist()
        exact_nulls: list[int] = np.count_nonzero(not_exact, axis=1).tolist()
        for i, name in enumerate(present):
            dtype = _DTYPES[RESOLUTIONS[name].storage_type]
            scaled[name] = _field(
                scaled_column(name), dtype, ints[i], not_scaled[i], scaled_nulls[i], rows
            )
            exact[name] = _field(name, ">f8", values[i], not_exact[i], exact_nulls[i], rows)
    empty = {
        name: (
            StoredField(scaled_column(name), _DTYPES[RESOLUTIONS[name].storage_type], None, None),
            StoredField(name, ">f8", None, None),
        )
        for name in MEASUREMENT_VALUE_FIELDS
        if name not in scaled
    }
    tail = StoredField("customer_id", ">i8", np.full(rows, customer_id, np.int64), None)
    return [
        *keys,
        *(scaled[n] if n in scaled else empty[n][0] for n in MEASUREMENT_VALUE_FIELDS),
        *(exact[n] if n in exact else empty[n][1] for n in MEASUREMENT_VALUE_FIELDS),
        tail,
    ]


@functools.lru_cache(maxsize=64)
def _record(columns: tuple[str, ...], present: tuple[bool, ...]) -> tuple[np.dtype[np.void], bytes]:
    """The record type of a stream of `columns`, each present or null (`present`), and one
    record's bytes with the count and every field's length filled in (batches of a fleet come in
    a few shapes: made once per shape)."""
    layout: list[tuple[str, str]] = [("count", ">i2")]
    for name, there in zip(columns, present, strict=True):
        layout.append((f"{name}_len", ">i4"))
        if there:
            layout.append((name, _TYPES[name]))
    dtype = np.dtype(layout)
    template = np.zeros((), dtype)
    template["count"] = len(columns)
    for name, there in zip(columns, present, strict=True):
        template[f"{name}_len"] = _SIZES[name] if there else -1
    return dtype, template.tobytes()


def _records(
    fields: list[StoredField], present: tuple[bool, ...], rows: int, index: Index | None
) -> npt.NDArray[np.void]:
    """The tuples of the rows `index` (all when None), every one with the fields `present`."""
    dtype, template = _record(tuple(f.name for f in fields), present)
    records = np.tile(np.frombuffer(template, np.uint8), rows).view(dtype)
    for f, there in zip(fields, present, strict=True):
        if not there:
            continue
        assert f.values is not None
        values = f.values if index is None else f.values[index]
        records[f.name] = values - _POSTGRES_EPOCH_US if f.name in _TIMES else values
    return records


def _cut_nulls(
    fields: list[StoredField], records: npt.NDArray[np.void], rows: int
) -> npt.NDArray[np.uint8]:
    """Records laid out with every field present, the value bytes of null cells cut out (one
    boolean mask over the buffer; for batches with many null shapes)."""
    dtype = records.dtype
    flat = records.view(np.uint8).reshape(rows, dtype.itemsize)
    keep = np.ones(flat.shape, np.bool_)
    for f in fields:
        if f.nulls is None:
            continue
        records[f"{f.name}_len"][f.nulls] = -1
        offset = dtype.fields[f.name][1] if dtype.fields else 0
        keep[f.nulls, offset : offset + _SIZES[f.name]] = False
    return flat[keep]


_MAX_SHAPES = 16
"""Up to this many null shapes (which partly-null fields a row holds), a stream is laid out
shape by shape (fixed-size records, no mask); past it, by cutting a mask out of full records."""


@dataclass(frozen=True, slots=True)
class CopyStream:
    """A binary COPY stream (or part of one) and the columns it carries, in `COPY_COLUMNS` order:
    those not null in every row of the batch (the others are left out of the statement, and
    take their default, NULL). A field costs PostgreSQL's COPY work even when null: a batch of
    values at their resolution leaves the 24 exact-double columns null in every row, and
    COPYing 29 columns instead of 52 cost PostgreSQL ~4.1 instead of ~5.0 µs/row of CPU (5,000-row
    batches, bench/README.md) and 92 bytes less per row on the wire."""

    columns: tuple[str, ...]
    data: bytes


def copy_stream(
    batch: MeasurementColumns, customer_id: int, *, header: bool = True, trailer: bool = True
) -> CopyStream:
    """The complete binary COPY stream (header, one tuple per row, trailer) of `batch`'s rows
    with the fields of `COPY_COLUMNS` that are not null in every row (`CopyStream.columns`);
    every key column must be non-null in every row.

    A field null in some rows only (a value null there, or its scaled/exact half that the row
    does not use: one value finer than its resolution makes both halves partly null) changes
    the record's length, so rows are laid out in groups that share a shape — within a group in
    batch order; the groups one after the other, which changes the order the rows are inserted
    in, not what is stored. Without `header` / `trailer`: the tuples alone (a stream sent in
    parts: the first with the header, the last with the trailer)."""
    head, tail = (_SIGNATURE if header else b""), (_TRAILER if trailer else b"")
    fields = [f for f in stored_fields(batch, customer_id) if f.values is not None]
    columns = tuple(f.name for f in fields)
    rows = batch.rows
    present = (True,) * len(fields)
    partial = [i for i, f in enumerate(fields) if f.nulls is not None]
    if not partial:
        return CopyStream(
            columns, b"".join((head, _records(fields, present, rows, None).data, tail))
        )
    codes = np.zeros(rows, np.int64)
    for bit, i in enumerate(partial):
        nulls = fields[i].nulls
        assert nulls is not None
        codes |= nulls.astype(np.int64) << bit
    shapes, inverse = np.unique(codes, return_inverse=True)
    if len(shapes) > _MAX_SHAPES or len(partial) > 62:
        cut = _cut_nulls(fields, _records(fields, present, rows, None), rows)
        return CopyStream(columns, b"".join((head, cut.data, tail)))
    parts: list[bytes | memoryview] = [head]
    for k, code in enumerate(shapes.tolist()):
        shape = list(present)
        for bit, i in enumerate(partial):
            shape[i] = not (code >> bit) & 1
        index = np.flatnonzero(inverse == k)
        parts.append(_records(fields, tuple(shape), len(index), index).data)
    parts.append(tail)
    return CopyStream(columns, b"".join(parts))
