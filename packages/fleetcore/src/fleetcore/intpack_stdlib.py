"""`fleetcore.intpack`'s packing, with the standard library only (the pusher's encoder).

The same choices as the numpy version, made the same way, so both give the same bytes (a
hypothesis test holds them to it): the forms are judged on the same rows with the same integer
cost, ties go the same way, every difference wraps in 64 bits like int64 arithmetic does. The
bulk work stays in C where the standard library has it: `array` for the 64-bit little-endian
images, byte slicing with a step for the shuffle, one big integer for a bit-packed column.

A column goes from step to step as an `array` (its values, its decimal integers, the
differences and zigzags of its forms), and each step makes its Python objects `STEP` values at
a time (`mapped`, and the loops written out where a list comprehension is quicker than a
`map`): a list of 5,000 Python floats or ints is ~160-200 KiB of small objects in the
interpreter's object arenas, which go back to the system only when wholly empty, and one
column's forms used to make three or four of them at once (a 5,000-row batch's encoding peaked
at ~1.8 MiB of Python objects over its records). A slice of 1,024 is as quick as the whole list
or quicker (its objects come from pools just freed), and an `array` built from a list is several
times quicker than one built from an iterator.
"""

from __future__ import annotations

import math
import sys
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from operator import sub, truediv
from typing import Any, TypeVar

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

__all__ = ["STEP", "PackedInts", "decimal_scale", "mapped", "pack_ints", "pack_raw"]

STEP = 1024
"""Values a step over a column makes Python objects of at once."""
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_BIG_ENDIAN = sys.byteorder == "big"
_NEGATIVE_ZERO = array("d", [-0.0]).tobytes()  # in the machine's byte order, as images are
_RINT = 1.5 * 2**52
_RINT_LIMIT = 2.0**50  # |x * 10**scale| below it: rounding by _RINT is exact
_N = TypeVar("_N", int, float)


def _listed(values: Sequence[_N]) -> list[_N]:
    """A slice of a column as a list (an array's all at once, in C: quicker to go over)."""
    return values.tolist() if isinstance(values, array) else list(values)


def mapped(code: str, function: Callable[..., _N], *columns: Sequence[Any]) -> array[_N]:
    """`array(code, map(function, *columns))`, made `STEP` items at a time."""
    out: array[_N] = array(code)
    for start in range(0, len(columns[0]), STEP):
        part = (_listed(c[start : start + STEP]) for c in columns)
        out += array(code, list(map(function, *part)))
    return out


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


def _differences(a: Sequence[int], b: Sequence[int]) -> array[int]:
    """a - b, item by item, as int64 arithmetic leaves it."""
    out = array("q")
    for start in range(0, len(a), STEP):
        end = start + STEP
        steps = list(map(sub, _listed(a[start:end]), _listed(b[start:end])))
        try:
            out += array("q", steps)
        except OverflowError:  # past int64: only a difference of extremes
            out += array("q", _wrapped(steps))
    return out


def _form(values: Sequence[int], mode: int) -> tuple[int, array[int]]:
    """(base, stored unsigned integers) of `values` in `mode`."""
    if mode == MODE_DELTA:
        encoded = array("Q", (0,))
        for start in range(0, len(values), STEP):
            window = _listed(values[max(start - 1, 0) : start + STEP])
            steps = list(map(sub, window[1:], window[:-1]))
            try:
                encoded += _zigzag(steps)
            except OverflowError:  # a step past int64 (the zigzag of one in it fits)
                encoded += _zigzag(_wrapped(steps))
        return values[0], encoded
    low = min(values)
    encoded = array("Q")
    for start in range(0, len(values), STEP):
        encoded += array("Q", [v - low for v in _listed(values[start : start + STEP])])
    return low, encoded


def _zigzag(steps: list[int]) -> array[int]:
    """(v << 1) ^ (v >> 63) on int64: 2v for v >= 0, -2v - 1 below."""
    return array("Q", [v + v if v >= 0 else -v - v - 1 for v in steps])


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


def pack_ints(values: Sequence[int], refs: Sequence[tuple[int, Sequence[int]]] = ()) -> PackedInts:
    """`intpack.pack_ints` on integers each within int64 (an `array("q")` or a list)."""
    if not values:
        return PackedInts(PACK_BITS, 0, MODE_OFFSET, 0, b"")
    small = len(values) < BITPACK_BELOW_ROWS
    probe = len(values) if small else SAMPLE
    candidates: list[tuple[int | None, Sequence[int]]] = [(None, values[:probe])]
    candidates += [(r, _differences(values[:probe], v[:probe])) for r, v in refs]
    best: tuple[int, int | None, int] | None = None
    for ref, series in candidates:
        for mode in (MODE_DELTA, MODE_OFFSET):
            base, encoded = _form(series, mode)
            cost = _cost(encoded, small, base, ref)
            if best is None or cost < best[0]:
                best = (cost, ref, mode)
    assert best is not None
    _, ref, mode = best
    series = values if ref is None else _differences(values, dict(refs)[ref])
    base, encoded = _form(series, mode)
    packing, width, data = _layout(encoded, max(encoded).bit_length(), small)
    return PackedInts(packing, width, mode, base, data, ref)


def pack_raw(values: Sequence[float]) -> PackedInts:
    """IEEE-754 bits as they are: bit-packed at 64 bits a value is the little-endian image."""
    raw = _little_endian(array("d", values))
    if len(values) < BITPACK_BELOW_ROWS:
        return PackedInts(PACK_BITS, 64, MODE_OFFSET, 0, raw)
    return PackedInts(PACK_BYTES, 64, MODE_OFFSET, 0, _shuffle(raw, 8))


def decimal_scale(values: Sequence[float]) -> tuple[int, array[int]] | None:
    """`intpack.decimal_scale`: the smallest scale at which every value is exactly
    `k / 10**scale`, and the k's (int64); None for a column that must travel as float64 bits."""
    if not (isinstance(values, array) and values.typecode == "d"):
        values = array("d", values)
    if _has_negative_zero(values):
        return None  # -0.0 comes back as 0.0 at any scale
    start = 0
    if len(values) > SAMPLE:
        found = _scale_from(values[:SAMPLE], 0)
        if found is None:
            return None
        start = found[0]
    return _scale_from(values, start)


def _has_negative_zero(values: array[float]) -> bool:
    """A -0.0 among the values: its 8 bytes at a word boundary of their image (searched in C)."""
    image = values.tobytes()
    found = image.find(_NEGATIVE_ZERO)
    while found != -1:
        if found % 8 == 0:
            return True
        found = image.find(_NEGATIVE_ZERO, found + 1)
    return False


def _scale_from(values: array[float], start: int) -> tuple[int, array[int]] | None:
    if not math.isfinite(sum(values)):  # NaN or an infinity among them (or a sum that large)
        return _scale_from_exact(values, start)
    largest = max(max(values, default=0.0), -min(values, default=0.0))
    for scale in range(start, MAX_SCALE + 1):
        factor = POW10[scale]
        if largest * factor >= _RINT_LIMIT:
            return _scale_from_exact(values, scale)
        ints = _decimals(values, factor)
        if ints is not None:
            return scale, ints
    return None


def _decimals(values: array[float], factor: float) -> array[int] | None:
    """Each value's k with k / factor == value, or None at the first slice where one has none."""
    ints = array("q")
    for start in range(0, len(values), STEP):
        part = values[start : start + STEP].tolist()
        # round() half to even without a call per value: adding and taking away 1.5 * 2**52
        # leaves a float that small rounded to an integer, ties to even (IEEE 754's default).
        ks = [(v * factor + _RINT) - _RINT for v in part]
        if [k / factor for k in ks] != part:
            return None
        ints += array("q", list(map(int, ks)))
    return ints


def _scale_from_exact(values: array[float], start: int) -> tuple[int, array[int]] | None:
    """`_scale_from` one round() at a time: for NaN, infinities and values near 2**53 (rare:
    whole lists here)."""
    count = len(values)
    listed = values.tolist()
    for scale in range(start, MAX_SCALE + 1):
        factor = POW10[scale]
        try:  # round() half to even, like numpy's rint
            ints = list(map(round, map(factor.__mul__, listed)))
        except (ValueError, OverflowError):  # NaN, infinities
            return None
        # |round(x)| < 2**53 exactly when |x| < 2**53 (floats that large are integers).
        if max(ints, default=0) >= EXACT_LIMIT or min(ints, default=0) <= -EXACT_LIMIT:
            return None
        if list(map(truediv, ints, [factor] * count)) == listed:
            return scale, array("q", ints)
    return None
