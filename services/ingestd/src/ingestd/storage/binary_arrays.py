"""numpy columns as PostgreSQL binary arrays, for the small-batch statement's `unnest`.

psycopg dumps a Python list element by element (a Python call per value: ~0.3 µs, 700 values
in a 27-row batch); a column held as a numpy array is laid out at once instead — the binary
array format of the PostgreSQL manual ("array_send": dimensions, null flag, element type, then
each element's length and big-endian bytes) built as one structured array. `BinaryArray` wraps
the bytes, its subclass names the array's type, and the dumper registered for each hands the
bytes over as they are.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from psycopg import adapters
from psycopg.adapt import Dumper
from psycopg.pq import Format

__all__ = [
    "BinaryArray",
    "Float8Array",
    "Int4Array",
    "Int8Array",
    "bigint_array",
    "bigint_arrays",
    "binary_array",
]


class BinaryArray:
    """A one-dimensional array already in PostgreSQL's binary format (the subclass says its
    type)."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data


class Int4Array(BinaryArray):
    __slots__ = ()


class Int8Array(BinaryArray):
    __slots__ = ()


class Float8Array(BinaryArray):
    __slots__ = ()


# element dtype -> (element type oid, the array's class)
_TYPES: dict[str, tuple[int, type[BinaryArray]]] = {
    ">i4": (23, Int4Array),
    ">i8": (20, Int8Array),
    ">f8": (701, Float8Array),
}


# element dtype -> the elements' layout: each one's length, then its bytes (made once: a
# structured dtype built from its fields costs more than laying out a small batch's column)
_RECORDS = {dtype: np.dtype([("len", ">i4"), ("value", dtype)]) for dtype in _TYPES}

_NULL = struct.pack(">i", -1)  # a null element: its length, no bytes
_RUNS_AT_MOST = 64  # nulls (or values) laid out by runs up to this many, else by a byte mask


def binary_array(
    values: npt.NDArray[np.generic], dtype: str, nulls: npt.NDArray[np.bool_] | None
) -> BinaryArray:
    """`values` (NULL where `nulls`; one or two dimensions, row-major) as a binary array of
    `dtype`'s type (">i4", ">i8", ">f8")."""
    element, kind = _TYPES[dtype]
    flat_nulls = None if nulls is None else nulls.reshape(-1)
    null_count = 0 if flat_nulls is None else int(np.count_nonzero(flat_nulls))
    dims = b"".join(struct.pack(">ii", n, 1) for n in values.shape)
    header = struct.pack(">iii", values.ndim, int(null_count > 0), element) + dims
    records = np.empty(values.size, _RECORDS[dtype])
    records["len"] = records.dtype["value"].itemsize
    records["value"] = values.reshape(-1)
    if not null_count:
        return kind(header + records.tobytes())
    assert flat_nulls is not None
    return kind(header + _with_nulls(records, flat_nulls, null_count))


def bigint_arrays(columns: Sequence[npt.NDArray[Any]]) -> list[BinaryArray]:
    """Columns of one length without nulls, each as `binary_array(column, ">i8", None)` makes
    it, laid out together (a few numpy calls for all of them instead of a few each)."""
    n = len(columns[0])
    header = struct.pack(">iiiii", 1, 0, 20, n, 1)
    records = np.empty((len(columns), n), _RECORDS[">i8"])
    records["len"] = 8
    records["value"] = columns
    data = records.tobytes()
    width = n * records.itemsize
    return [Int8Array(header + data[k * width : (k + 1) * width]) for k in range(len(columns))]


@functools.lru_cache(maxsize=64)
def _bigint_elements(n: int) -> struct.Struct:
    return struct.Struct(">" + "iq" * n)


def bigint_array(values: Sequence[int]) -> BinaryArray:
    """Python ints (none null) as `binary_array(np.asarray(values, np.int64), ">i8", None)` makes
    them, packed by `struct` in one call: no numpy for a few dozen values."""
    n = len(values)
    if n > _PACKED_AT_MOST:
        return binary_array(np.asarray(values, np.int64), ">i8", None)
    header = struct.pack(">iiiii", 1, 0, 20, n, 1)
    return Int8Array(header + _bigint_elements(n).pack(*[x for v in values for x in (8, v)]))


_PACKED_AT_MOST = 64  # more values take numpy (and the struct cache stays small)


def _with_nulls(records: npt.NDArray[np.void], nulls: npt.NDArray[np.bool_], count: int) -> bytes:
    """The elements with each null one's length -1 and its bytes left out. A small batch's
    matrices have few nulls (integer steps: only values finer than the resolution) or few values
    (the exact doubles): the bytes are joined by runs between the fewer of the two, a Python
    step each; many of both take a byte mask (a dozen numpy calls whatever the size)."""
    width, n = records.itemsize, len(records)
    pieces: list[bytes] = []
    start = 0
    if count <= _RUNS_AT_MOST:
        data = records.tobytes()
        for i in np.flatnonzero(nulls).tolist():
            pieces += (data[start * width : i * width], _NULL)
            start = i + 1
        pieces.append(data[start * width :])
        return b"".join(pieces)
    if n - count <= _RUNS_AT_MOST:
        data = records.tobytes()
        for i in np.flatnonzero(~nulls).tolist():
            pieces += (_NULL * (i - start), data[i * width : (i + 1) * width])
            start = i + 1
        pieces.append(_NULL * (n - start))
        return b"".join(pieces)
    records["len"][nulls] = -1
    flat = records.view(np.uint8).reshape(n, width)
    keep = np.ones(flat.shape, np.bool_)
    keep[nulls, 4:] = False
    return flat[keep].tobytes()


class _BinaryArrayDumper(Dumper):
    format = Format.BINARY

    def dump(self, obj: BinaryArray) -> bytes:
        return obj.data


for _oid, _kind in ((1007, Int4Array), (1016, Int8Array), (1022, Float8Array)):
    adapters.register_dumper(
        _kind, type(f"{_kind.__name__}Dumper", (_BinaryArrayDumper,), {"oid": _oid})
    )
