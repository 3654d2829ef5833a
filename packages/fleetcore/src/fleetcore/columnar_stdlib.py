"""The columnar encoding (docs/PROTOCOL.md) with the standard library only: the pusher's encoder.

Gateways are small ARM boxes: numpy costs a pusher ~30 MiB of memory and ~0.35 s of start-up,
and has no wheels for some of them (armv7). The pusher therefore encodes with this module,
which gives byte for byte what `fleetcore.columnar.encode_columns` (numpy) gives for the same
batch — same layout, same choice of form, reference, scale and packing (`intpack_stdlib`); the
tests hold the two to it on generated batches. ingestd keeps decoding with numpy.

A batch here is plain Python: per column a sequence of one value per row (ints for the key
columns — µs since the epoch for the times — floats for the readings) and, where some are null,
a sequence of booleans.
"""

from __future__ import annotations

import contextlib
from array import array
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import compress
from operator import not_
from typing import TypeVar

from fleetcore import intpack_stdlib
from fleetcore.columnar_layout import (
    COLUMN_IDS,
    COLUMNAR_VERSION,
    KEY_COLUMNS,
    KIND_DECIMAL,
    KIND_FLOAT,
    KIND_INT,
    REF_CANDIDATES,
    column_header,
    varint,
)
from fleetcore.intpack_stdlib import STEP

__all__ = ["PlainColumn", "encode_plain_columns"]


@dataclass(frozen=True, slots=True)
class PlainColumn:
    """One column: `values` has one entry per row (anything where null); `nulls` is None when
    no row is null, else one boolean per row."""

    values: Sequence[int] | Sequence[float]
    nulls: Sequence[bool] | None = None


@dataclass(frozen=True, slots=True)
class _Encoded:
    """What a later column may be encoded against: same kind, scale and null bitmap; its
    integers as int64 (four are kept: as lists, ~0.6 MiB of Python ints in a 5,000-row batch)."""

    column_id: int
    kind: int
    scale: int
    null_bits: bytes
    ints: array[int]


_DIGITS = bytes.maketrans(b"\x00\x01", b"01")
_N = TypeVar("_N", int, float)


def _present(
    column: PlainColumn, nulls: Sequence[bool] | None, code: str, kind: type[_N]
) -> array[_N]:
    """The column's values where not null, as an array of `code` (the values themselves when
    they are one and none is null: the pusher's columns are), made `STEP` values at a time."""
    values = column.values
    if nulls is None:
        if isinstance(values, array) and values.typecode == code:
            return values
        if isinstance(values, list):
            with contextlib.suppress(TypeError):  # floats in an int column: int() below
                return array(code, values)  # in C
        return intpack_stdlib.mapped(code, kind, values)
    out: array[_N] = array(code)
    for start in range(0, len(values), STEP):
        end = start + STEP
        out += array(
            code, list(map(kind, compress(values[start:end], map(not_, nulls[start:end]))))
        )
    return out


def _null_bitmap(nulls: Sequence[bool]) -> bytes:
    """Bit i (least significant first) set where row i is null: numpy's packbits, little.
    The flags as bytes 0/1, read as one binary number, last row first (all in C)."""
    digits = bytes(map(bool, nulls)).translate(_DIGITS)[::-1] or b"0"
    return int(digits, 2).to_bytes((len(nulls) + 7) // 8, "little")


def _encode_column(
    name: str, column: PlainColumn, earlier: list[_Encoded]
) -> tuple[bytes, bytes, _Encoded | None]:
    """(header, payload, what later columns may reference) of one column."""
    nulls = column.nulls if column.nulls is not None and any(column.nulls) else None
    null_bits = b"" if nulls is None else _null_bitmap(nulls)
    kind, scale, ints = KIND_INT, 0, None
    if name in KEY_COLUMNS:
        ints = _present(column, nulls, "q", int)
    else:
        floats = _present(column, nulls, "d", float)
        found = intpack_stdlib.decimal_scale(floats)
        if found is None:
            kind = KIND_FLOAT
        else:
            kind, (scale, ints) = KIND_DECIMAL, found
    column_id = COLUMN_IDS[name]
    if ints is None:
        packed = intpack_stdlib.pack_raw(floats)
        reference = None
    else:
        refs = [
            (e.column_id, e.ints)
            for e in earlier[-REF_CANDIDATES:]
            if (e.kind, e.scale, e.null_bits) == (kind, scale, null_bits)
        ]
        packed = intpack_stdlib.pack_ints(ints, refs)
        reference = _Encoded(column_id, kind, scale, null_bits, ints)
    header = column_header(
        column_id, bool(null_bits), kind, scale, packed.packing, packed.mode, packed.width,
        packed.ref, packed.base,
    )  # fmt: skip
    return header, null_bits + packed.data, reference


def encode_plain_columns(rows: int, columns: Mapping[str, PlainColumn]) -> bytes:
    """The uncompressed body of `rows` rows; the sender compresses it with zstd when that makes
    it smaller. Columns go in the order given (readings side by side, as `COLUMN_NAMES` has
    them, let one be encoded against its neighbour)."""
    headers, payloads = [], []
    earlier: list[_Encoded] = []
    for name, column in columns.items():
        if name not in COLUMN_IDS:
            raise ValueError(f"unknown column {name!r}")
        if len(column.values) != rows:
            raise ValueError(f"column {name!r} has {len(column.values)} values, not {rows}")
        if column.nulls is not None and len(column.nulls) != rows:
            raise ValueError(f"column {name!r} has {len(column.nulls)} null flags, not {rows}")
        all_null = column.nulls is not None and all(column.nulls) and rows
        if all_null and name not in KEY_COLUMNS:
            continue  # absent = null in every row
        header, payload, reference = _encode_column(name, column, earlier)
        headers.append(header)
        payloads.append(payload)
        if reference is not None:
            earlier = [*earlier[1 - REF_CANDIDATES :], reference]  # only these are ever tried
    start = bytes((COLUMNAR_VERSION,)) + varint(rows) + bytes((len(headers),))
    return b"".join((start, *headers, *payloads))
