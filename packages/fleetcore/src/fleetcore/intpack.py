"""Packing integer columns densely, vectorized with numpy (the columnar encoding's building blocks).

Two forms per column, whichever needs fewer bits per value: offsets from the column's smallest
value, or zigzag differences from the previous value (0, -1, 1, -2 … → 0, 1, 2, 3 …), all in
wrapping 64-bit arithmetic so every int64 sequence round-trips. Two layouts of the resulting
unsigned integers: bit-packed (`width` bits each, nothing wasted: best for small batches, whose
bytes are already as dense as their entropy) or whole bytes byte-shuffled (all first bytes, then
all second bytes …: long runs of near-zero high bytes and a low-byte stream that zstd compresses
better than bit-packed data when values cluster). Decimal readings become integers here too:
`value = k / 10**scale`, used only when every value comes back bit-identical.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from fleetcore.columnar_layout import (
    BITPACK_BELOW_ROWS,
    EXACT_LIMIT,
    MAX_SCALE,
    MODE_DELTA,
    MODE_OFFSET,
    PACK_BITS,
    PACK_BYTES,
    POW10,
    SAMPLE,
    base_bytes,
)

__all__ = [
    "MAX_SCALE",
    "MODE_DELTA",
    "MODE_OFFSET",
    "PACK_BITS",
    "PACK_BYTES",
    "PackedInts",
    "data_length",
    "decimal_scale",
    "from_decimal",
    "pack_ints",
    "pack_raw",
    "unpack",
    "unpack_ints",
]

_POW2 = np.array([1 << k for k in range(64)], np.uint64)

Int64s = npt.NDArray[np.int64]
UInt64s = npt.NDArray[np.uint64]
Float64s = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class PackedInts:
    packing: int
    width: int
    mode: int
    base: int
    data: bytes
    ref: int | None = None


def _zigzag(values: Int64s) -> UInt64s:
    return ((values << 1) ^ (values >> 63)).view(np.uint64)


def _unzigzag(encoded: UInt64s) -> Int64s:
    return (encoded >> np.uint64(1)).view(np.int64) ^ -(encoded & np.uint64(1)).view(np.int64)


def _bits(encoded: UInt64s) -> int:
    return int(encoded.max()).bit_length() if len(encoded) else 0


def _shuffle(encoded: UInt64s, planes: int) -> bytes:
    as_bytes = encoded.astype("<u8", copy=False).view(np.uint8).reshape(-1, 8)
    return as_bytes[:, :planes].T.tobytes()


def _unshuffle(data: bytes | memoryview, planes: int, count: int) -> UInt64s:
    full = np.zeros((count, 8), np.uint8)
    full[:, :planes] = np.frombuffer(data, np.uint8).reshape(planes, count).T
    return full.view("<u8").reshape(count).astype(np.uint64, copy=False)


def _bitpack(encoded: UInt64s, width: int) -> bytes:
    as_bytes = encoded.astype("<u8", copy=False).view(np.uint8).reshape(-1, 8)
    bits = np.unpackbits(as_bytes, axis=1, bitorder="little")[:, :width]
    return np.packbits(bits.reshape(-1), bitorder="little").tobytes()


def _bitunpack(data: bytes | memoryview, width: int, count: int) -> UInt64s:
    bits = np.zeros((count, 64), np.uint8)
    packed = np.frombuffer(data, np.uint8)
    bits[:, :width] = np.unpackbits(packed, count=count * width, bitorder="little").reshape(
        count, width
    )
    as_u8 = np.packbits(bits, axis=1, bitorder="little")
    return as_u8.view("<u8").reshape(count).astype(np.uint64, copy=False)


def data_length(packing: int, width: int, count: int) -> int:
    """Bytes that `count` values of `width` bits take in a layout."""
    return (count * width + 7) // 8 if packing == PACK_BITS else count * (width // 8)


def _layout(encoded: UInt64s, bits: int, small: bool) -> tuple[int, int, bytes]:
    if small:
        return PACK_BITS, bits, _bitpack(encoded, bits)
    width = max(8, (bits + 7) // 8 * 8)
    return PACK_BYTES, width, _shuffle(encoded, width // 8)


def _form(values: Int64s, mode: int) -> tuple[int, UInt64s]:
    """(base, stored integers) of `values` in `mode`."""
    if mode == MODE_DELTA:
        steps = np.empty_like(values)
        steps[0] = 0
        np.subtract(values[1:], values[:-1], out=steps[1:])
        return int(values[0]), _zigzag(steps)
    low = int(values.min())
    return low, (values - np.int64(low)).view(np.uint64)


def _bit_lengths(encoded: UInt64s) -> npt.NDArray[np.intp]:
    """Each value's `int.bit_length()`, exactly (float log2 rounds near powers of two)."""
    return np.searchsorted(_POW2, encoded, side="right")


def _cost(encoded: UInt64s, small: bool, base: int, ref: int | None) -> int:
    """Bits of the column. Bit-packed: the exact size. Byte-shuffled: the bits the values really
    use, summed (what zstd's entropy coder gets close to), so a column of mostly small numbers
    with a few large ones is not judged by its largest. Plus its base and reference, which
    matter in small batches (a time column of one tick: 0 bits per row, a 7-byte base). An
    integer, so the standard-library encoder (`intpack_stdlib`) makes the very same choice."""
    header = 8 * (base_bytes(base) + (ref is not None))
    if small:
        return _bits(encoded) * len(encoded) + header
    return int(_bit_lengths(encoded).sum()) + header


def pack_ints(values: Int64s, refs: Sequence[tuple[int, Int64s]] = ()) -> PackedInts:
    """The densest form of `values` alone, or of their differences from a reference column
    (`refs`: candidate (column id, values) pairs, e.g. i2 against i1 of the same meters).
    Differences from the previous value win ties (they compress better). In a large batch the
    forms are compared on its first `SAMPLE` rows, and only the chosen one is computed in full."""
    if not len(values):
        return PackedInts(PACK_BITS, 0, MODE_OFFSET, 0, b"")
    small = len(values) < BITPACK_BELOW_ROWS
    probe = slice(None) if small else slice(0, SAMPLE)
    best: tuple[int, int | None, int] | None = None
    for ref, series in [(None, values[probe]), *((r, (values - v)[probe]) for r, v in refs)]:
        for mode in (MODE_DELTA, MODE_OFFSET):
            base, encoded = _form(series, mode)
            cost = _cost(encoded, small, base, ref)
            if best is None or cost < best[0]:
                best = (cost, ref, mode)
    assert best is not None
    _, ref, mode = best
    series = values if ref is None else values - dict(refs)[ref]
    base, encoded = _form(series, mode)
    packing, width, data = _layout(encoded, _bits(encoded), small)
    return PackedInts(packing, width, mode, base, data, ref)


def pack_raw(values: Float64s) -> PackedInts:
    """IEEE-754 bits as they are (the fallback for a column that is not decimal)."""
    packing, width, data = _layout(values.view(np.uint64), 64, len(values) < BITPACK_BELOW_ROWS)
    return PackedInts(packing, width, MODE_OFFSET, 0, data)


def unpack(data: bytes | memoryview, packing: int, width: int, count: int) -> UInt64s:
    """The stored unsigned integers; `len(data)` must equal `data_length(...)`."""
    if packing == PACK_BITS:
        return _bitunpack(data, width, count)
    return _unshuffle(data, width // 8, count)


def unpack_ints(encoded: UInt64s, mode: int, base: int, ref: Int64s | None = None) -> Int64s:
    ints = (
        np.cumsum(_unzigzag(encoded), dtype=np.int64)
        if mode == MODE_DELTA
        else encoded.view(np.int64)
    )
    ints = ints + np.int64(base)  # wraps in 64 bits, like the sender's subtraction
    return ints if ref is None else ints + ref


def decimal_scale(values: Float64s) -> tuple[int, Int64s] | None:
    """The smallest scale at which every value is exactly `k / 10**scale`, and the k's. The
    search starts at the scale the first `SAMPLE` values need (the whole column needs at
    least that), so a 3-decimal column is usually checked in full once."""
    start = 0
    if len(values) > SAMPLE:
        found = _scale_from(values[:SAMPLE], 0)
        if found is None:
            return None
        start = found[0]
    return _scale_from(values, start)


def _scale_from(values: Float64s, start: int) -> tuple[int, Int64s] | None:
    bits = values.view(np.int64)
    with np.errstate(over="ignore", invalid="ignore"):
        for scale in range(start, MAX_SCALE + 1):
            factor = POW10[scale]
            scaled = np.rint(values * factor)
            if not np.all(np.abs(scaled) < EXACT_LIMIT):  # also false for NaN and infinities
                return None
            ints = scaled.astype(np.int64)
            # Checked exactly as the receiver computes it: -0.0 becomes 0 here and fails.
            if np.array_equal(from_decimal(ints, scale).view(np.int64), bits):
                return scale, ints
    return None


def from_decimal(ints: Int64s, scale: int) -> Float64s:
    return ints.astype(np.float64) / POW10[scale]
