"""RFC 3339 time texts as µs since the epoch, a whole column at a time (numpy).

A JSON measurement body carries two times a row; a `datetime` object for each, then its µs, is
about a fifth of what decoding a row into columns costs. `micros_of_texts` reads a column of texts
in a few array passes, for the forms gateways send — `YYYY-MM-DDTHH:MM:SS`, an optional fraction
of 1-6 digits, then `Z` or an offset `±HH:MM` (hours 00-23, minutes 00-59) — checking every field
as msgspec's RFC 3339 decoder does (years 0001-9999, the days of each month, leap years, hours
00-23, minutes and seconds 00-59). Any text in another form (a lowercase `t` or `z`, a space for
`T`, more than 6 fractional digits, an offset without its colon, anything invalid) makes it
answer None: the caller then decodes the body with msgspec's datetimes, which accept or refuse
it and say why. So the answer, when there is one, is the µs of the `datetime` msgspec gives for
the same text (tests/fleetcore/test_rfc3339.py checks that on generated texts).
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = ["micros_of_bytes", "micros_of_texts"]

Int64s = npt.NDArray[np.int64]

_WIDTH = 33
"""The longest accepted text is 32 characters (19 + a 7-character fraction + a 6-character
offset); a 33rd byte marks a longer one."""
_PAIRS = ("Y1", "Y2", "O", "D", "h", "m", "S", "f1", "f2", "f3", "H", "N")
"""The two-digit numbers a text is read as: the year's two halves, month, day, hour, minute,
second, the fraction's three pairs (µs), the offset's hours and minutes."""
_LOW = np.array([0, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0], np.int16)[:, None]
_SPAN = np.array([99, 99, 11, 30, 23, 59, 59, 99, 99, 99, 23, 59], np.uint16)[:, None]
"""Each of `_PAIRS`' lowest value and its highest less the lowest."""
_DAYS_IN_MONTH = np.array([0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], np.int32)
_Z, _PLUS, _MINUS = ord("Z"), ord("+"), ord("-")


@dataclass(frozen=True, slots=True)
class _Form:
    """One accepted form of a given length: what to subtract from each byte (`base`: "0" where
    a digit goes, the character itself where a literal does, 0 at an offset's sign, which is
    checked apart) and below what the difference must be (`limit`: 10 for a digit, 1 for a
    literal), and where the tens and ones of each of `_PAIRS` are (`length`: a row of zeros,
    for a pair the form does not have)."""

    base: npt.NDArray[np.uint8]
    limit: npt.NDArray[np.uint8]
    sign: int | None
    tens: npt.NDArray[np.intp]
    ones: npt.NDArray[np.intp]


def _pattern(length: int, utc: bool) -> str | None:
    """The form of a text of `length` characters ending in Z (`utc`) or in an offset, as a
    pattern (digits: the letters of `_LETTERS`; `~`: the offset's sign; any other character
    itself), or None: no accepted form is that long."""
    base = "YYyy-OO-DDThh:mm:SS"
    zone = "Z" if utc else "~HH:NN"
    fraction = length - len(base) - len(zone)
    if fraction == 0:
        return base + zone
    if 2 <= fraction <= 7:
        return base + "." + "abcdef"[: fraction - 1] + zone
    return None


_LETTERS = ("YY", "yy", "OO", "DD", "hh", "mm", "SS", "ab", "cd", "ef", "HH", "NN")
"""The pattern letters of each of `_PAIRS`' tens and ones."""


@functools.lru_cache(maxsize=32)
def _form(length: int, utc: bool) -> _Form | None:
    pattern = _pattern(length, utc)
    if pattern is None:
        return None
    letters = "".join(_LETTERS)
    base = [ord("0") if c in letters else 0 if c == "~" else ord(c) for c in pattern]
    limit = [10 if c in letters else 255 if c == "~" else 1 for c in pattern]
    tens, ones = [], []
    for pair in _LETTERS:
        places = [i for i, c in enumerate(pattern) if c in pair]
        if pair[0] == pair[1]:  # a field's two digits share a letter: tens first
            places = places[:2]
        else:  # a fraction pair: each digit its own letter, either may be absent
            places = [pattern.find(pair[0]), pattern.find(pair[1])]
        tens.append(places[0] if len(places) > 0 and places[0] >= 0 else length)
        ones.append(places[1] if len(places) > 1 and places[1] >= 0 else length)
    sign = pattern.find("~")
    return _Form(
        np.array(base, np.uint8)[:, None],
        np.array(limit, np.uint8)[:, None],
        sign if sign >= 0 else None,
        np.array(tens, np.intp),
        np.array(ones, np.intp),
    )


def _calendar() -> tuple[Int64s, npt.NDArray[np.intp], Int64s, Int64s]:
    """Per year 0-9999: days from 1970-01-01 to its January 1st (proleptic Gregorian) and
    whether it is a leap year (1 or 0: an index); per leap-or-not and month 1-12: the days
    before the month's first, less one (a date's days are year's + month's + its day), and
    the month's length. ~90 KB, looked up instead of a dozen array passes of civil-from-days
    arithmetic per call."""
    years = np.arange(10_000, dtype=np.int64)
    leap = ((years % 4 == 0) & ((years % 100 != 0) | (years % 400 == 0))).astype(np.intp)
    before = years - 1  # leap days before year y: those of the years 1..y-1 (0 for y = 0, 1)
    leap_days = np.where(years > 0, before // 4 - before // 100 + before // 400, 0)
    year_days = (years - 1970) * 365 + leap_days - 477  # 477 leap days in 1..1969
    lengths = np.tile(_DAYS_IN_MONTH.astype(np.int64), (2, 1))
    lengths[1, 2] = 29
    starts = np.cumsum(lengths, axis=1) - lengths - 1
    return year_days, leap, starts, lengths


_YEAR_DAYS, _LEAP, _MONTH_STARTS, _MONTH_LENGTHS = _calendar()
_MICROS_OF = np.array(
    [0, 0, 0, 0, 3_600_000_000, 60_000_000, 1_000_000, 10_000, 100, 1, -3_600_000_000, -60_000_000],
    np.int64,
)
"""µs per unit of each of `_PAIRS` (the date's pairs count through `_calendar`'s days; the
offset is taken off: its pairs are negated first where its sign is `-`)."""
_MICROS_OF_DOUBLES = _MICROS_OF.astype(np.float64)
"""The same as doubles: a text's clock and offset in µs (at most ~9 * 10^10) sum exactly in
float64, and numpy's product of doubles is BLAS's (its integer product a loop of its own)."""
_MICROS_PER_DAY = 86_400_000_000


def _by_kind(b: npt.NDArray[np.uint8], lengths: npt.NDArray[np.int_]) -> npt.NDArray[np.int_]:
    """Each text's form as a kind: its length * 2, + 1 when it ends in Z."""
    last = b[np.arange(len(lengths)), np.maximum(lengths - 1, 0)]
    kinds: npt.NDArray[np.int_] = lengths * 2 + (last == _Z)
    return kinds


_FEW_RUNS = 8
"""Up to this many runs of texts of one form (a column of one form, or a few such columns
joined), each is read as a slice of the rows; past it, each form's rows are gathered."""


def _groups(
    b: npt.NDArray[np.uint8], lengths: npt.NDArray[np.int_]
) -> list[tuple[int, slice | npt.NDArray[np.intp]]]:
    """The texts' kinds (`_by_kind`), each with its rows: one slice for a column of one form
    (the usual, found in a few passes), a slice per run for a few runs (`_FEW_RUNS`: the time
    and received_at columns joined, which differ in their fractions), else an index per kind."""
    length = int(lengths[0])
    if length > 0 and (lengths == length).all():
        utc = b[:, length - 1] == _Z
        if utc.all():
            return [(length * 2 + 1, slice(None))]
        if not utc.any():
            return [(length * 2, slice(None))]
    kinds = _by_kind(b, lengths)
    starts: list[int] = (np.flatnonzero(kinds[1:] != kinds[:-1]) + 1).tolist()
    if len(starts) < _FEW_RUNS:
        ends = [0, *starts, len(lengths)]
        return [(int(kinds[a]), slice(a, z)) for a, z in itertools.pairwise(ends)]
    present: list[int] = np.flatnonzero(np.bincount(kinds)).tolist()
    return [(kind, np.flatnonzero(kinds == kind)) for kind in present]


def micros_of_texts(texts: npt.NDArray[np.object_]) -> Int64s | None:
    """µs since 1970-01-01T00:00:00Z of each text of `texts` (an object array of str), or None
    when any is not in an accepted form (see the module docstring). The texts are grouped by
    form (their length, and whether they end in Z): each group is checked and read with a few
    whole-array operations, one row per character position."""
    n = len(texts)
    if n == 0:
        return np.empty(0, np.int64)
    try:
        raw = texts.astype(f"S{_WIDTH}")
    except (UnicodeEncodeError, TypeError, ValueError):
        return None
    b = raw.view(np.uint8).reshape(n, _WIDTH)
    # A text has no NUL (JSON cannot carry one unescaped), so its length is its bytes up to the
    # padding (str_len: a C loop, ~7x cheaper than counting non-zero bytes along the rows); a
    # longer one is cut to 33 and matches no form.
    lengths = np.strings.str_len(raw)
    return micros_of_bytes(b, lengths)


def micros_of_bytes(b: npt.NDArray[np.uint8], lengths: npt.NDArray[np.int_]) -> Int64s | None:
    """`micros_of_texts` of texts given as bytes: row i of `b` holds text i from its first
    column, `lengths[i]` bytes long (what follows in the row is not read; no length is over
    `b`'s width, and one over 32 matches no form: none is that long)."""
    n = len(lengths)
    if n == 0:
        return np.empty(0, np.int64)
    pairs = np.empty((len(_PAIRS), n), np.int16)
    negative = None
    for kind, rows in _groups(b, lengths):
        length, utc = divmod(kind, 2)
        form = _form(length, bool(utc))
        if form is None:
            return None
        text = b[rows, :length].T  # one row per character position
        # each byte less its base, one row per character position, and a row of zeros (the
        # digits of a pair the form does not have): wraps below the base, so a digit is 0-9
        # after it and a literal 0
        digits = np.empty((length + 1, text.shape[1]), np.uint8)
        np.subtract(text, form.base, out=digits[:length])
        digits[length] = 0
        if not (digits[:length] < form.limit).all():
            return None
        if form.sign is not None:
            sign = text[form.sign]
            if not ((sign == _PLUS) | (sign == _MINUS)).all():
                return None
            if negative is None:
                negative = np.zeros(n, np.bool_)
            negative[rows] = sign == _MINUS
        pairs[:, rows] = digits[form.tens] * 10 + digits[form.ones]  # at most 99: one byte
    if not ((pairs - _LOW).view(np.uint16) <= _SPAN).all():  # below the lowest wraps high
        return None
    year = pairs[0].astype(np.intp) * 100 + pairs[1]
    if not year.all():  # year 0000
        return None
    month, day = pairs[2], pairs[3]
    leap = _LEAP[year]
    if (day > 28).any() and (day > _MONTH_LENGTHS[leap, month]).any():
        return None
    days = _YEAR_DAYS[year] + _MONTH_STARTS[leap, month] + day
    if negative is not None and negative.any():
        pairs[10:, negative] *= -1
    clock = (_MICROS_OF_DOUBLES @ pairs).astype(np.int64)  # BLAS; every sum exact (< 2^53)
    result: Int64s = days * _MICROS_PER_DAY + clock
    return result
