"""`fleetcore.intpack`'s packing, with the standard library only (the pusher's encoder).

The same choices as the numpy version, made the same way, so both give the same bytes (a
hypothesis test holds them to it): the forms are judged on the same rows with the same integer
cost, ties go the same way, every difference wraps in 64 bits like int64 arithmetic does. The
bulk work stays in C where the standard library has it: `array` for the 64-bit little-endian
images, byte slicing with a step for the shuffle, one big integer for a bit-packed column.

The stored forms are `array`s, and so are the columns a later one may reference (the caller
keeps them, `columnar_stdlib`): a list of 5,000 Python ints is ~160 KiB of small objects in the
interpreter's object arenas, which go back to the system only when wholly empty, so what a
long-lived pusher holds at once while it encodes stays in its RSS. Lists, quicker to compute
with, live only while one column is encoded.
"""

from __future__ import annotations

import math
import sys
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import repeat
from operator import sub, truediv

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

__all__ = ["PackedInts", "decimal_scale", "pack_ints", "pack_raw"]

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_BIG_ENDIAN = sys.byteorder == "big"
_NEGATIVE_ZERO = bytes(7) + b"\x80"  # -0.0, little-endian
_RINT = 1.5 * 2**52
_RINT_LIMIT = 2.0**50  # |x * 10**scale| below it: rounding by _RINT is exact


@dataclass(frozen=True, slots=True)
class PackedInts:
    packing: int
    width: int
    mode: int
    base: int
    data: bytes
    ref: int | None = None


def _wrapped(values: list[int]) -> list[int]:
    """Values as int64 arithmetic leaves them (only a difference of extremes needs it)."""
    if not values or (min(values) >= _INT64_MIN and max(values) <= _INT64_MAX):
        return values
    return [((v - _INT64_MIN) & 0xFFFF_FFFF_FFFF_FFFF) + _INT64_MIN for v in values]


def _zigzag(values: list[int]) -> array[int]:
    """(v << 1) ^ (v >> 63) on int64: 2v for v >= 0, -2v - 1 below."""
    return array("Q", [v + v if v >= 0 else -v - v - 1 for v in values])


def _form(values: list[int], mode: int) -> tuple[int, array[int]]:
    """(base, stored unsigned integers) of `values` in `mode`, as an array: only the series
    and the steps are lists of Python ints, and only while the form is made."""
    if mode == MODE_DELTA:
        steps = _wrapped([0, *map(sub, values[1:], values[:-1])])
        return values[0], _zigzag(steps)
    low = min(values)
    return low, array("Q", [v - low for v in values])


def _cost(encoded: array[int], small: bool, base: int, ref: int | None) -> int:
    """`intpack._cost`: exact bits when bit-packed, the sum of each value's bits otherwise."""
    header = 8 * (base_bytes(base) + (ref is not None))
    if small:
        return max(encoded).bit_length() * len(encoded) + header
    return sum(map(int.bit_length, encoded)) + header


def _little_endian(words: array[int] | array[float]) -> bytes:
    if _BIG_ENDIAN:  # pragma: no cover - every gateway we ship to is little-endian
        words.byteswap()
    return words.tobytes()


def _shuffle(raw: bytes, planes: int) -> bytes:
    """All first bytes of the 8-byte words, then all second bytes … (`planes` of them)."""
    return b"".join(raw[plane::8] for plane in range(planes))


def _bitpack(encoded: array[int], width: int) -> bytes:
    packed = 0
    for value in reversed(encoded):
        packed = packed << width | value
    return packed.to_bytes((len(encoded) * width + 7) // 8, "little")


def _layout(encoded: array[int], bits: int, small: bool) -> tuple[int, int, bytes]:
    if small:
        return PACK_BITS, bits, _bitpack(encoded, bits)
    width = max(8, (bits + 7) // 8 * 8)
    return PACK_BYTES, width, _shuffle(_little_endian(encoded), width // 8)


def pack_ints(values: list[int], refs: Sequence[tuple[int, Sequence[int]]] = ()) -> PackedInts:
    """`intpack.pack_ints` on Python integers (each within int64)."""
    if not values:
        return PackedInts(PACK_BITS, 0, MODE_OFFSET, 0, b"")
    small = len(values) < BITPACK_BELOW_ROWS
    probe = len(values) if small else SAMPLE
    candidates: list[tuple[int | None, list[int]]] = [(None, values[:probe])]
    candidates += [(r, _wrapped(list(map(sub, values[:probe], v[:probe])))) for r, v in refs]
    best: tuple[int, int | None, int] | None = None
    for ref, series in candidates:
        for mode in (MODE_DELTA, MODE_OFFSET):
            base, encoded = _form(series, mode)
            cost = _cost(encoded, small, base, ref)
            if best is None or cost < best[0]:
                best = (cost, ref, mode)
    assert best is not None
    _, ref, mode = best
    series = values if ref is None else _wrapped(list(map(sub, values, dict(refs)[ref])))
    base, encoded = _form(series, mode)
    packing, width, data = _layout(encoded, max(encoded).bit_length(), small)
    return PackedInts(packing, width, mode, base, data, ref)


def pack_raw(values: list[float]) -> PackedInts:
    """IEEE-754 bits as they are: bit-packed at 64 bits a value is the little-endian image."""
    raw = _little_endian(array("d", values))
    if len(values) < BITPACK_BELOW_ROWS:
        return PackedInts(PACK_BITS, 64, MODE_OFFSET, 0, raw)
    return PackedInts(PACK_BYTES, 64, MODE_OFFSET, 0, _shuffle(raw, 8))


def decimal_scale(values: list[float]) -> tuple[int, list[int]] | None:
    """`intpack.decimal_scale`: the smallest scale at which every value is exactly
    `k / 10**scale`, and the k's; None for a column that must travel as float64 bits."""
    if _has_negative_zero(values):
        return None  # -0.0 comes back as 0.0 at any scale
    start = 0
    if len(values) > SAMPLE:
        found = _scale_from(values[:SAMPLE], 0)
        if found is None:
            return None
        start = found[0]
    return _scale_from(values, start)


def _has_negative_zero(values: list[float]) -> bool:
    """A -0.0 among the values: its 8 bytes at a word boundary of their image (searched in C)."""
    image = _little_endian(array("d", values))
    found = image.find(_NEGATIVE_ZERO)
    while found != -1:
        if found % 8 == 0:
            return True
        found = image.find(_NEGATIVE_ZERO, found + 1)
    return False


def _scale_from(values: list[float], start: int) -> tuple[int, list[int]] | None:
    if not math.isfinite(sum(values)):  # NaN or an infinity among them (or a sum that large)
        return _scale_from_exact(values, start)
    largest = max(max(values, default=0.0), -min(values, default=0.0))
    for scale in range(start, MAX_SCALE + 1):
        factor = POW10[scale]
        if largest * factor >= _RINT_LIMIT:
            return _scale_from_exact(values, scale)
        # round() half to even without a call per value: adding and taking away 1.5 * 2**52
        # leaves a float that small rounded to an integer, ties to even (IEEE 754's default).
        ks = [(v * factor + _RINT) - _RINT for v in values]
        if [k / factor for k in ks] == values:
            return scale, list(map(int, ks))
    return None


def _scale_from_exact(values: list[float], start: int) -> tuple[int, list[int]] | None:
    """`_scale_from` one round() at a time: for NaN, infinities and values near 2**53."""
    count = len(values)
    for scale in range(start, MAX_SCALE + 1):
        factor = POW10[scale]
        try:  # round() half to even, like numpy's rint
            ints = list(map(round, map(factor.__mul__, values)))
        except (ValueError, OverflowError):  # NaN, infinities
            return None
        # |round(x)| < 2**53 exactly when |x| < 2**53 (floats that large are integers).
        if max(ints, default=0) >= EXACT_LIMIT or min(ints, default=0) <= -EXACT_LIMIT:
            return None
        if list(map(truediv, ints, repeat(factor, count))) == values:
            return scale, ints
    return None
