"""Decoding a small columnar batch all columns at once (`fleetcore.columnar`'s small path).

A gateway's minute is ~27 rows and ~50 columns. numpy decodes each column in a dozen calls of
~1-2 µs each whatever their length (a bit unpack into a 64-column matrix, the zigzag, the
cumulative sum, the decimal scaling), so a 27-row batch cost ~0.9 ms of CPU to decode — more than
the whole JSON body's parse (issue 26: columnar small batches cost more than JSON ones). Here the
columns' headers and bitmaps are read one by one (a few Python operations each) and then every
value of every column is unpacked in the same numpy calls: each value's bit offset, the 9 bytes
it spans gathered, shifted and masked; the zigzag deltas summed per column by one cumulative sum;
references added in column order; the decimal columns scaled as one matrix. Every result is
what the numpy path computes, wrapping in 64 bits alike (tests/fleetcore/test_columnar.py holds
both to the same bits and errors, damaged bodies included).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from fleetcore.columnar_layout import (
    KEY_COLUMNS,
    KIND_DECIMAL,
    KIND_FLOAT,
    MODE_DELTA,
    PACK_BITS,
    POW10,
)
from fleetcore.columnar_read import Header, Reader, invalid
from fleetcore.schemas import MAX_VALUE

__all__ = ["SMALL_ROWS", "Extremes", "Small", "decode_small"]

Values = npt.NDArray[np.int64] | npt.NDArray[np.float64]
Mask = npt.NDArray[np.bool_]


class Extremes(NamedTuple):
    """What a small batch's row checks need, taken from its matrices in a few numpy calls
    (`fleetcore.columnar_batch`: a batch whose extremes pass has no refused row): the smallest
    and the largest time, device_id and received_at (`KEY_COLUMNS`' order; none is null), and
    whether every value is within ±`MAX_VALUE` (NaN is not; a null is)."""

    low: list[int]
    high: list[int]
    values_within: bool


class Small(NamedTuple):
    columns: dict[str, tuple[Values, Mask | None]]
    extremes: Extremes | None
    """None: a key column has a null, or the batch has no rows (the row checks decide)."""


SMALL_ROWS = 64
"""Batches of at most this many rows, bit-packed (as senders pack batches under 256 rows), take
this path; larger ones take numpy's per-column decoding, whose cost is then spread over more
rows."""

_U64 = np.uint64
_POW10 = np.array(POW10, np.float64)
_WIDTH_MASKS = np.array([(1 << width) - 1 for width in range(65)], _U64)
"""The low `width` bits, for widths 0-64."""
_STEPS = np.arange(SMALL_ROWS, dtype=_U64)


def _check_reference(header: Header, nulls: int, ref: tuple[Header, int] | None) -> None:
    """`fleetcore.columnar._reference`'s checks, on the null bitmaps read as integers."""
    if ref is None or ref[0].kind == 2:  # KIND_FLOAT: no integers to add
        raise invalid(f"column {header.name}: reference {header.ref} is not an earlier column")
    if (ref[0].kind, ref[0].scale) != (header.kind, header.scale):
        raise invalid(f"column {header.name}: reference {header.ref} has another kind or scale")
    if ref[1] != nulls:
        raise invalid(f"column {header.name}: reference {header.ref} has other nulls")


def decode_small(reader: Reader, rows: int, headers: list[Header]) -> Small | None:
    """Every column's values (0 where null) and null mask (None: none is null) of a batch of at
    most SMALL_ROWS rows, read from `reader` in header order, with their `Extremes`; None
    (nothing read) when a column is byte-shuffled, for the numpy path."""
    if any(h.packing != PACK_BITS for h in headers):
        return None
    seen: dict[str, tuple[Header, int]] = {}
    nulls_of: list[int] = []
    bitmaps: dict[int, memoryview] = {}
    starts: list[int] = []
    counts: list[int] = []
    every = (1 << rows) - 1
    view, pos, end = reader.view, reader.pos, len(reader.view)
    bitmap_bytes = (rows + 7) // 8
    for c, header in enumerate(headers):  # `Reader.take`'s bounds, without a call per part
        nulls = 0
        present = rows
        if header.has_nulls:
            if bitmap_bytes > end - pos:
                raise invalid("body ends early")
            bitmap = view[pos : pos + bitmap_bytes]
            pos += bitmap_bytes
            nulls = int.from_bytes(bitmap, "little") & every
            if nulls:
                bitmaps[c] = bitmap
                present -= nulls.bit_count()
        starts.append(pos)
        length = (present * header.width + 7) // 8  # `intpack.data_length` of PACK_BITS
        if length > end - pos:
            raise invalid("body ends early")
        pos += length
        if header.ref is not None and header.kind != KIND_FLOAT:
            _check_reference(header, nulls, seen.get(header.ref))
        seen[header.name] = (header, nulls)
        nulls_of.append(nulls)
        counts.append(present)
    reader.pos = pos
    ints = _integers(view, headers, starts, counts)
    return _columns(ints, rows, headers, counts, nulls_of, bitmaps)


def _integers(
    view: memoryview, headers: list[Header], starts: list[int], counts: list[int]
) -> npt.NDArray[np.int64]:
    """Every column's present values as integers (float64 columns: their bits), one after
    another, references added. Each value is read from the two little-endian words at the byte
    its bits start in and 8 bytes on (the bits past the first come from the second), shifted,
    masked by a table of widths; zigzag and the running sum only where a column is in delta
    mode. A batch without nulls (every column as long: the usual) is read as a matrix, a column
    a row; any other as one run of values with each one's column."""
    if not headers:
        return np.empty(0, np.int64)
    length = counts[0]
    if counts.count(length) == len(counts):
        return _matrix(view, headers, starts, length).reshape(-1)
    per_column = np.array([(h.width, h.mode == MODE_DELTA, h.base) for h in headers], np.int64)
    width, delta, base = per_column.T
    start = starts[0]
    data = bytes(view[start:]) + bytes(16)
    # every byte's 8-byte little-endian word (unaligned: numpy reads it byte by byte)
    words = np.ndarray((len(data) - 7,), "<u8", data, strides=(1,))
    relative = (np.array(starts, np.int64) - start) * 8
    count = np.array(counts, np.intp)
    first = np.cumsum(count) - count
    column = np.repeat(np.arange(len(headers)), count)
    offset = np.arange(len(column), dtype=np.int64) - first[column]
    bit = relative[column] + offset * width[column]
    stored = _unpack(words, bit, _WIDTH_MASKS[width[column]])
    ints = stored.view(np.int64)
    if delta.any():
        each = delta.astype(np.bool_)[column]
        summed = np.zeros(len(column) + 1, np.int64)
        np.cumsum(np.where(each, _zigzag(stored), 0), dtype=np.int64, out=summed[1:])
        ints = np.where(each, summed[1:] - summed[first[column]], ints)
    ints += base[column]
    index = {h.name: c for c, h in enumerate(headers)}
    at = first.tolist()  # Python ints: slicing with numpy scalars costs ~10 µs a slice
    for c, header in enumerate(headers):
        if header.ref is not None and header.kind != KIND_FLOAT:
            r = index[header.ref]
            ints[at[c] : at[c] + counts[c]] += ints[at[r] : at[r] + counts[r]]
    return ints


def _matrix(
    view: memoryview, headers: list[Header], starts: list[int], length: int
) -> npt.NDArray[np.int64]:
    """`_integers` of a batch without nulls: a (columns, rows) matrix, in about 25 numpy calls
    (each costs 5-20 µs inside a running ingestd, whatever its length): the bit offsets as
    uint64 from the start (no cast), one word per value when no width passes 57 bits (a value
    then lies within the 8 bytes from its first: the usual, float64 columns aside), the zigzag
    in uint64, the bases added in the same pass for every column."""
    start = starts[0]
    data = bytes(view[start:]) + bytes(16)
    # every byte's 8-byte little-endian word (unaligned: numpy reads it byte by byte)
    words = np.ndarray((len(data) - 7,), "<u8", data, strides=(1,))
    widths = [h.width for h in headers]
    layout = np.array([[(at - start) * 8 for at in starts], widths], _U64)[:, :, np.newaxis]
    bit = layout[1] * _STEPS[:length]
    bit += layout[0]
    at = bit >> _U64(3)
    bit &= _U64(7)  # now each value's shift within its first byte
    stored = words[at]
    stored >>= bit
    if max(widths) > 57:
        stored |= (words[at + _U64(8)] << (_U64(63) - bit)) << _U64(1)
    stored &= _WIDTH_MASKS[widths][:, np.newaxis]
    ints: npt.NDArray[np.int64] = stored.view(np.int64)
    delta = [c for c, h in enumerate(headers) if h.mode == MODE_DELTA]
    if delta:
        zigzag = stored[delta]
        zigzag = (zigzag >> _U64(1)) ^ (_U64(0) - (zigzag & _U64(1)))
        ints[delta] = np.cumsum(zigzag.view(np.int64), axis=1)
    ints += np.array([h.base for h in headers], np.int64)[:, np.newaxis]
    _add_references(ints, headers)
    return ints


def _unpack(
    words: npt.NDArray[np.uint64], bit: npt.NDArray[np.int64], mask: npt.NDArray[np.uint64]
) -> npt.NDArray[np.uint64]:
    """The values whose bits start at `bit`, masked to their widths."""
    at = bit >> 3
    shift = (bit & 7).astype(_U64)
    stored: npt.NDArray[np.uint64] = (words[at] >> shift) | (
        (words[at + 8] << (_U64(63) - shift)) << _U64(1)
    )
    stored &= mask
    return stored


def _zigzag(stored: npt.NDArray[np.uint64]) -> npt.NDArray[np.int64]:
    zigzag: npt.NDArray[np.int64] = (stored >> _U64(1)).view(np.int64) ^ -(stored & _U64(1)).view(
        np.int64
    )
    return zigzag


def _add_references(matrix: npt.NDArray[np.int64], headers: list[Header]) -> None:
    """Each referencing column's row plus its reference's, in header order (a reference may
    itself reference: such chains are added a link at a time, each link's rows at once)."""
    index = {h.name: c for c, h in enumerate(headers)}
    level: dict[int, int] = {}
    links: dict[int, tuple[list[int], list[int]]] = {}
    for c, header in enumerate(headers):
        if header.ref is not None and header.kind != KIND_FLOAT:
            r = index[header.ref]
            level[c] = level.get(r, 0) + 1
            targets, sources = links.setdefault(level[c], ([], []))
            targets.append(c)
            sources.append(r)
    for step in sorted(links):
        targets, sources = links[step]
        matrix[targets] += matrix[sources]


def _columns(
    ints: npt.NDArray[np.int64],
    rows: int,
    headers: list[Header],
    counts: list[int],
    nulls_of: list[int],
    bitmaps: dict[int, memoryview],
) -> Small:
    """The values one row per column (0 where null), the decimal columns scaled as a matrix."""
    masks: dict[int, Mask] = {}
    if not bitmaps and not any(nulls_of):  # no nulls: the values are the matrix already
        return _named(ints.reshape(len(headers), rows), headers, masks)
    matrix = np.zeros((len(headers), rows), np.int64)
    at = 0
    for c, present in enumerate(counts):
        if c in bitmaps:
            packed = np.frombuffer(bitmaps[c], np.uint8)
            masks[c] = np.unpackbits(packed, count=rows, bitorder="little").astype(np.bool_)
            matrix[c][~masks[c]] = ints[at : at + present]
        elif present:
            matrix[c] = ints[at : at + present]
        elif nulls_of[c]:
            masks[c] = np.ones(rows, np.bool_)
        at += present
    return _named(matrix, headers, masks)


def _named(matrix: npt.NDArray[np.int64], headers: list[Header], masks: dict[int, Mask]) -> Small:
    """Each column's row of `matrix` by name, as its kind reads it, and the batch's extremes.
    The usual batch (the key columns first, then its decimal columns, as senders order them)
    takes slices of the matrix and its extremes in Python, not copies by index: each numpy call
    saved is 5-20 µs inside a running ingestd (bench/README.md, issue 26's colcpu pass)."""
    decimal = [c for c, h in enumerate(headers) if h.kind == KIND_DECIMAL]
    picked = (
        matrix[decimal[0] : decimal[-1] + 1]
        if decimal and decimal[-1] - decimal[0] + 1 == len(decimal)
        else matrix[decimal]
    )
    scaled = np.divide(picked, _divisors(tuple(headers[c].scale for c in decimal)))
    floats = dict(zip(decimal, scaled, strict=True))
    out: dict[str, tuple[Values, Mask | None]] = {}
    keys: list[int] = []
    within = True  # the decimal columns' and each float64 column's largest |value| (NaN: not)
    for c, header in enumerate(headers):
        values: Values
        if header.kind == KIND_DECIMAL:
            values = floats[c]
        elif header.kind == KIND_FLOAT:
            values = matrix[c].view(np.float64)
            within = within and bool(np.abs(values).max(initial=0.0) <= MAX_VALUE)
        else:
            values = matrix[c]
            keys.append(c)
        out[header.name] = (values, masks.get(c))
    if not matrix.shape[1] or len(keys) != len(KEY_COLUMNS) or any(c in masks for c in keys):
        return Small(out, None)
    order = [headers[c].name for c in keys]
    if order != list(KEY_COLUMNS):
        keys = [keys[order.index(name)] for name in KEY_COLUMNS]
    key_rows = (matrix[: len(keys)] if keys == [0, 1, 2] else matrix[keys]).tolist()
    within = within and bool(np.abs(scaled).max(initial=0.0) <= MAX_VALUE)
    extremes = Extremes([min(r) for r in key_rows], [max(r) for r in key_rows], within)
    return Small(out, extremes)


@functools.lru_cache(maxsize=1024)
def _divisors(scales: tuple[int, ...]) -> npt.NDArray[np.float64]:
    """10^scale per decimal column, as a column vector (read-only: shared between batches; a
    fleet's batches come in a few forms of scales)."""
    divisors = _POW10[list(scales)][:, np.newaxis]
    divisors.flags.writeable = False
    return divisors
