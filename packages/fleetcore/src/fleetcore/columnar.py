"""The columnar measurements encoding (`application/vnd.fleet.columnar.v1`, docs/PROTOCOL.md).

A batch travels column by column instead of row by row: integers and decimal readings as
delta- or offset-encoded integers, packed densely (`fleetcore.intpack`). On meter data this is
about a quarter of gzip JSON (bench/wire.py), and decoding is a handful of numpy operations per
column rather than a parse per value.

Lossless by construction: a value column is sent as decimal (`k / 10**scale`) only when every
value of the column comes back bit-identical from that division (checked on the bit patterns, so
-0.0 is never turned into 0.0); otherwise the column is sent as raw IEEE-754 float64 bits.

Layout (all integers little-endian; varint = unsigned LEB128, at most 10 bytes):

    u8 version (1) · varint rows · u8 column count
    per column: u8 first · u8 code · u8 width · [u8 reference id] · varint zigzag(base)
    then per column, in the same order: [null bitmap] data

- `first`: `has_nulls << 7 | has_reference << 6 | id`, id the column's number in `COLUMN_NAMES`
  (0 time, 1 device_id, 2 received_at, 3… the values); a column absent from the body is null in
  every row, except the three key columns, which must be present;
- `code`: `kind << 6 | packing << 5 | mode << 4 | scale`, kind 0 integer (the key columns),
  1 decimal (value = integer / 10**scale), 2 float64 (the IEEE bits as the integers: mode 0,
  base 0, width 64, no reference);
- mode 0: each stored integer is `integer - base`, unsigned; mode 1: each is the zigzag-encoded
  (0, -1, 1, -2 … → 0, 1, 2, 3 …) difference from the previous integer, the first from `base`;
  with a reference, the result is added to the referenced column's integers, row by row (an
  earlier column of the same kind and scale with the same null bitmap: i2 against i1 of the same
  meters); all arithmetic wraps in 64 bits;
- packing 1: `width` (0…64) bits per integer, integer i at bits i*width… (least significant bit
  first); packing 0: `width` a multiple of 8, the `width/8` low bytes of each integer
  byte-shuffled (all first bytes, then all second bytes …);
- null bitmap (when `has_nulls`): ceil(rows/8) bytes, bit i (least significant first) = row i is
  null; the data then holds only the non-null values.

Times are microseconds since 1970-01-01T00:00:00Z. The sender compresses the body with zstd when
that makes it smaller (`Content-Encoding: zstd`). Decoding refuses (`BatchFormatError`, HTTP 400)
anything that does not follow this layout: another version, unknown or repeated columns, a kind
not allowed for the column, lengths that do not match `rows`, a missing key column, bytes left
over. What a well-formed body carries is then validated row by row (`fleetcore.columnar_batch`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt

from fleetcore import columnar_small, intpack
from fleetcore.columnar_layout import (
    COLUMN_IDS,
    COLUMN_NAMES,
    COLUMNAR_MEDIA_TYPE,
    COLUMNAR_VERSION,
    KEY_COLUMNS,
    KIND_DECIMAL,
    KIND_FLOAT,
    KIND_INT,
    REF_CANDIDATES,
    column_header,
    datetime_from_micros,
    micros_from_datetime,
    varint,
)
from fleetcore.columnar_read import Header, Reader, invalid, read_headers
from fleetcore.limits import MAX_BATCH_ROWS
from fleetcore.schemas import BatchFormatError, too_many_rows

__all__ = [
    "COLUMNAR_MEDIA_TYPE",
    "COLUMNAR_VERSION",
    "COLUMN_NAMES",
    "KEY_COLUMNS",
    "Column",
    "MeasurementColumns",
    "columns_from_rows",
    "datetime_from_micros",
    "declared_rows",
    "decode_columns",
    "decode_with_extremes",
    "encode_columns",
    "micros_from_datetime",
]

Int64s = npt.NDArray[np.int64]
Float64s = npt.NDArray[np.float64]
Mask = npt.NDArray[np.bool_]


@dataclass(frozen=True, slots=True)
class Column:
    """One column: `values` has one entry per row (0 where null); `nulls` is None when none is."""

    values: Int64s | Float64s
    nulls: Mask | None = None

    def null_mask(self) -> Mask:
        return self.nulls if self.nulls is not None else np.zeros(len(self.values), np.bool_)


@dataclass(frozen=True, slots=True)
class MeasurementColumns:
    """A measurement batch column by column. `time` and `received_at` are µs since the Unix
    epoch (UTC) and `device_id` an integer, all int64; value columns are float64. Columns absent
    from `columns` are null in every row."""

    rows: int
    columns: Mapping[str, Column]

    def take(self, index: npt.NDArray[np.intp] | Mask) -> MeasurementColumns:
        """The rows selected by an index array or a mask, in that order."""
        picked = {
            name: Column(c.values[index], None if c.nulls is None else c.nulls[index])
            for name, c in self.columns.items()
        }
        rows = int(np.count_nonzero(index)) if index.dtype == np.bool_ else len(index)
        return MeasurementColumns(rows, picked)


def columns_from_rows(rows: Sequence[Mapping[str, Any]]) -> MeasurementColumns:
    """Columns from protocol rows (aware datetimes, ints, floats or None); tests and benches."""
    columns: dict[str, Column] = {}
    for name in COLUMN_NAMES:
        raw = [row.get(name) for row in rows]
        if all(v is None for v in raw):
            continue
        nulls = np.array([v is None for v in raw], np.bool_)
        if name in KEY_COLUMNS:
            ints = [
                0 if v is None else micros_from_datetime(v) if isinstance(v, datetime) else int(v)
                for v in raw
            ]
            values: Int64s | Float64s = np.array(ints, np.int64)
        else:
            values = np.array([0.0 if v is None else float(v) for v in raw], np.float64)
        columns[name] = Column(values, nulls if nulls.any() else None)
    return MeasurementColumns(len(rows), columns)


# --- encoding ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Encoded:
    """What a later column may be encoded against: same kind, scale and null bitmap."""

    column_id: int
    kind: int
    scale: int
    null_bits: bytes
    ints: Int64s


def _encode_column(
    name: str, column: Column, earlier: list[_Encoded]
) -> tuple[bytes, bytes, _Encoded | None]:
    """(header, payload, what later columns may reference) of one column."""
    nulls = column.nulls if column.nulls is not None and column.nulls.any() else None
    present = column.values if nulls is None else column.values[~nulls]
    null_bits = b"" if nulls is None else np.packbits(nulls, bitorder="little").tobytes()
    kind, scale, ints = KIND_INT, 0, None
    if name in KEY_COLUMNS:
        ints = present.astype(np.int64, copy=False)
    else:
        found = intpack.decimal_scale(present.astype(np.float64, copy=False))
        if found is None:
            kind = KIND_FLOAT
        else:
            kind, (scale, ints) = KIND_DECIMAL, found
    column_id = COLUMN_IDS[name]
    if ints is None:
        packed = intpack.pack_raw(present.astype(np.float64, copy=False))
        reference = None
    else:
        refs = [
            (e.column_id, e.ints)
            for e in earlier[-REF_CANDIDATES:]
            if (e.kind, e.scale, e.null_bits) == (kind, scale, null_bits)
        ]
        packed = intpack.pack_ints(ints, refs)
        reference = _Encoded(column_id, kind, scale, null_bits, ints)
    header = column_header(
        column_id, bool(null_bits), kind, scale, packed.packing, packed.mode, packed.width,
        packed.ref, packed.base,
    )  # fmt: skip
    return header, null_bits + packed.data, reference


def encode_columns(batch: MeasurementColumns) -> bytes:
    """The uncompressed body; the sender compresses it with zstd when that makes it smaller."""
    headers, payloads = [], []
    earlier: list[_Encoded] = []
    for name, column in batch.columns.items():
        if name not in COLUMN_IDS:
            raise ValueError(f"unknown column {name!r}")
        if len(column.values) != batch.rows:
            raise ValueError(f"column {name!r} has {len(column.values)} values, not {batch.rows}")
        all_null = column.nulls is not None and bool(column.nulls.all()) and batch.rows
        if all_null and name not in KEY_COLUMNS:
            continue  # absent = null in every row
        header, payload, reference = _encode_column(name, column, earlier)
        headers.append(header)
        payloads.append(payload)
        if reference is not None:
            earlier.append(reference)
    start = bytes((COLUMNAR_VERSION,)) + varint(batch.rows) + bytes((len(headers),))
    return b"".join((start, *headers, *payloads))


# --- decoding ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Decoded:
    header: Header
    nulls: Mask | None
    ints: Int64s | None  # the present values as integers (not for float64 columns)


def _reference(header: Header, nulls: Mask | None, decoded: dict[str, _Decoded]) -> Int64s | None:
    if header.ref is None:
        return None
    ref = decoded.get(header.ref)
    if ref is None or ref.ints is None:
        raise invalid(f"column {header.name}: reference {header.ref} is not an earlier column")
    if (ref.header.kind, ref.header.scale) != (header.kind, header.scale):
        raise invalid(f"column {header.name}: reference {header.ref} has another kind or scale")
    same_nulls = (ref.nulls is None and nulls is None) or (
        ref.nulls is not None and nulls is not None and np.array_equal(ref.nulls, nulls)
    )
    if not same_nulls:
        raise invalid(f"column {header.name}: reference {header.ref} has other nulls")
    return ref.ints


def _decode_column(
    reader: Reader, rows: int, header: Header, decoded: dict[str, _Decoded]
) -> Column:
    nulls: Mask | None = None
    present = rows
    if header.has_nulls:
        bitmap = np.frombuffer(reader.take((rows + 7) // 8), np.uint8)
        nulls = np.unpackbits(bitmap, count=rows, bitorder="little").astype(np.bool_)
        present = rows - int(np.count_nonzero(nulls))
        if not present or present == rows:
            nulls = None if present == rows else nulls
    data = reader.take(intpack.data_length(header.packing, header.width, present))
    encoded = intpack.unpack(data, header.packing, header.width, present)
    ints: Int64s | None = None
    if header.kind == KIND_FLOAT:
        values: Int64s | Float64s = encoded.view(np.float64)
    else:
        reference = _reference(header, nulls, decoded)
        ints = intpack.unpack_ints(encoded, header.mode, header.base, reference)
        values = ints if header.kind == KIND_INT else intpack.from_decimal(ints, header.scale)
    decoded[header.name] = _Decoded(header, nulls, ints)
    if nulls is not None:
        full: Int64s | Float64s = np.zeros(rows, values.dtype)  # type: ignore[assignment]
        full[~nulls] = values
        values = full
    return Column(values, nulls)


def declared_rows(body: bytes | bytearray | memoryview) -> int | None:
    """The row count a body's header declares (None when the header is unreadable): what
    decoding it will allocate for, known before decoding (`decode_columns` refuses past
    MAX_BATCH_ROWS)."""
    if isinstance(body, bytes | bytearray) and len(body) > 1 and body[1] < 0x80:
        return body[1]  # a one-byte count (under 128 rows): no Reader
    reader = Reader(body)
    try:
        reader.byte()
        return reader.varint()
    except BatchFormatError:
        return None


def decode_columns(
    body: bytes | bytearray | memoryview, *, small_rows: int = columnar_small.SMALL_ROWS
) -> MeasurementColumns:
    """The batch a body carries; `BatchFormatError` when the body does not follow the layout.
    Batches of at most `small_rows` rows are decoded all columns at once
    (`fleetcore.columnar_small`), larger ones a column at a time; both give the same bits."""
    return decode_with_extremes(body, small_rows=small_rows)[0]


def decode_with_extremes(
    body: bytes | bytearray | memoryview, *, small_rows: int = columnar_small.SMALL_ROWS
) -> tuple[MeasurementColumns, columnar_small.Extremes | None]:
    """`decode_columns`' batch and, for a small batch, its extremes (`columnar_small.Extremes`:
    what the row checks need, from the matrices; None: the checks look row by row)."""
    reader = Reader(body)
    version = reader.byte()
    if version != COLUMNAR_VERSION:
        raise invalid(f"columnar version {version} is not supported (1 is)")
    rows = reader.varint()
    if rows > MAX_BATCH_ROWS:  # a column of equal values can take 0 bytes per row
        raise too_many_rows(rows)
    headers = read_headers(reader, reader.byte())
    names = [h.name for h in headers]
    for name in names if len(set(names)) < len(names) else ():
        if names.count(name) > 1:
            raise invalid(f"column {name} appears twice")
    missing = [name for name in KEY_COLUMNS if name not in names]
    if missing and rows:
        raise invalid(f"key column {missing[0]} is missing")
    small = columnar_small.decode_small(reader, rows, headers) if rows <= small_rows else None
    extremes = None
    if small is not None:
        columns = {name: Column(values, nulls) for name, (values, nulls) in small.columns.items()}
        extremes = small.extremes
    else:
        decoded: dict[str, _Decoded] = {}
        columns = {h.name: _decode_column(reader, rows, h, decoded) for h in headers}
    if reader.pos != len(reader.view):
        raise invalid(f"{len(reader.view) - reader.pos} bytes after the last column")
    return MeasurementColumns(rows, columns), extremes
