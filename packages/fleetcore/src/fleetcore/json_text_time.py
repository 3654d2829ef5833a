"""A large JSON measurement body (32 KiB and more, ~100 rows) of valid rows as columns, its times
read as text a column at a time (`text_time_columns`: `fleetcore.json_columns`' first way for
such a body).

msgspec decodes the rows with their times as text and their values without bounds — one object
fewer per time and no constraint check per value, a quarter of what a typed row costs to decode
— each row's id and values are packed into a binary record by `struct` (C, no object per cell)
and read by numpy as one matrix, the times are read a column at a time (`fleetcore.rfc3339`),
each distinct sample time once, the bounds checked on the value matrix. Anything this way does
not take whole (a time in another form, a value out of bounds, an escape anywhere in the body,
a row msgspec refuses) answers None, and `json_columns` takes the typed way, whose rows say what
is refused and why; where both take a body they give the same columns, bit for bit
(tests/fleetcore/test_json_columns.py).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from itertools import chain, pairwise, starmap
from typing import Any

import msgspec
import numpy as np
import numpy.typing as npt
from msgspec.structs import astuple

from fleetcore.columnar import Column, MeasurementColumns
from fleetcore.json_batch import check_item_bound
from fleetcore.json_small import with_values
from fleetcore.limits import MAX_BATCH_ROWS
from fleetcore.rfc3339 import micros_of_bytes
from fleetcore.schemas import MAX_VALUE, MEASUREMENT_VALUE_FIELDS, Id, too_many_rows

__all__ = [
    "TEXT_TIME_MIN_BYTES",
    "cells",
    "key_value_columns",
    "text_time_columns",
    "values_in_bounds",
]

Int64s = npt.NDArray[np.int64]

TEXT_TIME_MIN_BYTES = 32 * 1024
"""Bodies from this size (~100 rows) read their time columns as text in numpy
(`fleetcore.rfc3339`: a few dozen calls whatever a column's length); smaller ones read each
distinct time text once (`fleetcore.json_small`)."""
_VALUES = len(MEASUREMENT_VALUE_FIELDS)
_WIDTH = 3 + _VALUES  # a row's fields: time, device_id, received_at, the values
_CHUNK = 1024
"""Rows packed at a time: one chunk's records (or, for a chunk with a null, its object array of
every cell, 8 bytes per field) is the only extra memory the conversion holds besides the columns
themselves."""
_TextTimeRow = msgspec.defstruct(
    "_TextTimeRow",
    [
        ("time", str),
        ("device_id", Id),
        ("received_at", str),
        *((field, float | None, None) for field in MEASUREMENT_VALUE_FIELDS),
    ],
    gc=False,
)
"""`MeasurementRow` with its times as text and its values unbounded, its fields in
`MeasurementRow`'s order — the order a pusher writes an item's keys, so msgspec finds each key
where it looks first (~0.04 µs/row less than the id and values first, bench/README.md's eighth
pass)."""
_RECORD = struct.Struct(f"=?q?{_VALUES}d")
"""A `_TextTimeRow`'s tuple as one native binary record: the texts as one byte of their truth
each, which is not read — so `struct` packs the tuple as it is, without a slice of it per row."""
_RECORD_DTYPE = np.dtype(
    [("time", "V1"), ("id", "=i8"), ("received_at", "V1"), ("values", "=f8", (_VALUES,))]
)
_TEXT_TIME_DECODER: msgspec.json.Decoder[Any] = msgspec.json.Decoder(
    msgspec.defstruct("_TextTimeBatch", [("items", list[_TextTimeRow])])  # type: ignore[valid-type]
)
_MIN_ITEM_BYTES = len(b'{"time":"","device_id":0,"received_at":""},')
"""The fewest bytes a `_TextTimeRow` can be decoded from (its three required fields; no
backslash, so no escapes): a body shorter than `MAX_BATCH_ROWS` of them cannot decode into more
rows than a batch may carry, and needs no item count (`check_item_bound`, a pass over the body
that cost ~0.17 µs per row of a 5,000-row batch) before the decode."""


def cells(part: Sequence[Any]) -> npt.NDArray[np.object_]:
    """Rows (`MeasurementRow`s or `_TextTimeRow`s: the same fields in the same order) as a
    (rows, fields) object array."""
    flat = np.fromiter(chain.from_iterable(map(astuple, part)), object, len(part) * _WIDTH)
    return flat.reshape(len(part), _WIDTH)


def key_value_columns(
    keys: Int64s, values: npt.NDArray[np.float64], nullable: bool = True
) -> MeasurementColumns:
    """The batch of key rows (time, device_id, received_at) and value rows (NaN: null; with
    `nullable` False none is, so the nulls are not looked for)."""
    columns: dict[str, Column] = {
        "time": Column(keys[0]),
        "device_id": Column(keys[1]),
        "received_at": Column(keys[2]),
    }
    n = keys.shape[1]
    if nullable:
        return with_values(columns, values, n)
    for name, row in zip(MEASUREMENT_VALUE_FIELDS, values, strict=True):
        columns[name] = Column(row)
    return MeasurementColumns(n, columns)


def _text_time_part(part: Sequence[Any], values: npt.NDArray[np.float64], ids: Int64s) -> bool:
    """One chunk of `_TextTimeRow`s' ids and values into the columns (already sliced to the
    chunk): each row's id and values packed into one binary record in C (`struct`, from the
    row's `astuple`), the records read by numpy as one matrix — no Python-level object array of
    every cell, which took ~0.3 µs per row more. The tuples live one at a time: a chunk's worth
    held at once set off the garbage collector's passes. A chunk with a null (None, which
    `struct` does not pack) goes through the object array: True then (a value may be NaN, a
    null), else False."""
    try:
        packed = b"".join(starmap(_RECORD.pack, map(astuple, part)))
    except (struct.error, OverflowError):
        matrix = cells(part)
        values[...] = matrix[:, 3:].T
        ids[...] = matrix[:, 1]
        return True
    records = np.frombuffer(packed, _RECORD_DTYPE)
    values[...] = records["values"].T
    ids[...] = records["id"]
    return False


_SAMPLE = 64


def _distinct(texts: npt.NDArray[Any]) -> tuple[npt.NDArray[Any], npt.NDArray[np.intp] | None]:
    """The texts to read for a column, and where each row's text is among them (None: one
    each, in order): when at most a quarter of the rows start a run of one text (a batch in
    time order: 5,000 rows of 20 meters hold 250 runs), each run's text once, found by one
    comparison of neighbours in C; else each distinct text once when at most a quarter of them
    are distinct (~0.1 µs/row less than reading every one); a column of mostly distinct texts
    (`received_at`, one meter's times) whole. Reading a text costs a few dozen array passes per
    character; finding the distinct ones, a dict pass and a lookup per text — so the first
    `_SAMPLE` texts decide first whether to look (~0.08 µs/row lost on a column that turns out
    distinct)."""
    n = len(texts)
    sample = min(n, _SAMPLE)
    if n > 1 and np.count_nonzero(texts[1:sample] != texts[: sample - 1]) * 4 < sample:
        starts = np.empty(n, np.bool_)
        starts[0] = True
        np.not_equal(texts[1:], texts[:-1], out=starts[1:])
        runs = np.flatnonzero(starts)
        if len(runs) * 4 <= n:
            at = np.cumsum(starts, dtype=np.intp)
            at -= 1
            return texts[runs], at
    if len(set(texts[:sample].tolist())) * 4 > sample:
        return texts, None
    listed = texts.tolist()
    distinct = dict.fromkeys(listed)
    if len(distinct) * 4 > n:
        return texts, None
    position = dict(zip(distinct, range(len(distinct)), strict=True))
    at = np.fromiter(map(position.__getitem__, listed), np.intp, n)
    return np.fromiter(distinct, object, len(distinct)), at


_TEXT_WIDTH = 33
"""The longest accepted time text is 32 characters (`fleetcore.rfc3339`); a 33rd marks a
longer one."""
_FEW_RUNS = 16
"""Up to this many runs of texts of one length, each run is copied as one strided view."""


def _joined_texts(joined: str, out: npt.NDArray[np.uint8]) -> Int64s | None:
    """Texts joined by NULs (which no JSON text holds: msgspec refuses a raw control character
    in a string, and a body with a backslash has no escapes read here) written into `out` (a row
    per text, `_TEXT_WIDTH` wide, zeros), each from the row's first column; their lengths (a
    longer one's cut to the width: no accepted form is that long), or None when a text is not
    ASCII (no accepted form is). The lengths come from where the NULs are; each run of texts of
    one length is one strided copy (the usual column is one run, or a few where a time has no
    fraction), many runs one gather. No object per text, no conversion of each text (`astype`)
    as an object array of them took."""
    try:
        encoded = joined.encode("ascii")
    except UnicodeEncodeError:
        return None
    data = np.frombuffer(encoded, np.uint8)
    n = len(out)
    breaks = np.flatnonzero(data == 0)
    if len(breaks) != n - 1:  # a NUL in a text after all: no accepted form holds one
        return None
    ends = np.empty(n, np.int64)
    ends[:-1] = breaks
    ends[-1] = len(data)
    starts = np.empty(n, np.int64)
    starts[0] = 0
    starts[1:] = ends[:-1] + 1
    lengths = ends - starts
    runs: list[int] = (np.flatnonzero(lengths[1:] != lengths[:-1]) + 1).tolist()
    if len(runs) < _FEW_RUNS:
        for first, end in pairwise([0, *runs, n]):
            length = int(lengths[first])
            width = min(length, _TEXT_WIDTH)
            texts = np.ndarray(  # rows a text and its NUL apart
                (end - first, width), np.uint8, encoded, int(starts[first]), (length + 1, 1)
            )
            out[first:end, :width] = texts
    else:
        padded = np.zeros(len(data) + _TEXT_WIDTH, np.uint8)
        padded[: len(data)] = data
        out[...] = np.lib.stride_tricks.sliding_window_view(padded, _TEXT_WIDTH)[starts]
    cut: Int64s = np.minimum(lengths, _TEXT_WIDTH)
    return cut


def _micros_of_columns(times: list[str], received: str, n: int) -> Int64s | None:
    """The µs of the sample times (`times`, each distinct text once: `_distinct`) and of the
    `received_at` texts (`received`: joined by NULs, `_joined_texts`), all read in one call of
    `micros_of_bytes` (its few dozen array passes cost the same for a few texts as for
    thousands: one call instead of two is ~0.1 ms less per chunk of a streamed batch), as the
    rows (time, received_at) of one matrix; None when a text is not in an accepted form."""
    once, at = _distinct(np.fromiter(times, object, n))
    try:
        raw = once.astype(f"S{_TEXT_WIDTH}")  # a longer text is cut to 33: no form
    except (UnicodeEncodeError, TypeError, ValueError):
        return None
    k = len(once)
    texts = np.zeros((k + n, _TEXT_WIDTH), np.uint8)
    texts[:k] = raw.view(np.uint8).reshape(k, _TEXT_WIDTH)
    lengths = _joined_texts(received, texts[k:])
    if lengths is None:
        return None
    # no NUL in a text (see `_joined_texts`): its length is its bytes up to the padding
    micros = micros_of_bytes(texts, np.concatenate((np.strings.str_len(raw), lengths)))
    if micros is None:
        return None
    out = np.empty((2, n), np.int64)
    out[0] = micros[:k] if at is None else micros[:k][at]
    out[1] = micros[k:]
    return out


def text_time_columns(body: bytes | bytearray) -> MeasurementColumns | None:
    """The body's rows as columns when every row is valid and in the forms this way reads
    (see the module docstring); None for any other body. Whole-body limits raise as in
    `parse_batch`."""
    if body.find(b"\\") >= 0:
        return None
    if len(body) >= _MIN_ITEM_BYTES * MAX_BATCH_ROWS:
        check_item_bound(body)
    try:
        rows: list[Any] = _TEXT_TIME_DECODER.decode(body).items
    except (msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        return None
    n = len(rows)
    if n > MAX_BATCH_ROWS:
        raise too_many_rows(n)
    if not n:
        return MeasurementColumns(0, {})
    values = np.empty((_VALUES, n), np.float64)
    keys = np.empty((3, n), np.int64)
    nullable = False
    for start in range(0, n, _CHUNK):
        end = min(start + _CHUNK, n)
        part = rows[start:end]
        nullable |= _text_time_part(part, values[:, start:end], keys[1, start:end])
    times = [row.time for row in rows]
    received = "\0".join([row.received_at for row in rows])
    del rows, part
    micros = _micros_of_columns(times, received, n)
    if micros is None:
        return None
    keys[0], keys[2] = micros
    del times, received, micros
    if not values_in_bounds(values, nullable):
        return None
    return key_value_columns(keys, values, nullable)


def values_in_bounds(values: npt.NDArray[np.float64], nullable: bool) -> bool:
    """Every value of the matrix within ±`MAX_VALUE` (NaN, a null, counts as within; with
    `nullable` False there is none, and two reductions do)."""
    if nullable:
        return not (np.abs(values) > MAX_VALUE).any()  # NaN compares false
    return bool(values.max() <= MAX_VALUE and values.min() >= -MAX_VALUE)
