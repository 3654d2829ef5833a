"""PostgreSQL's binary COPY stream of a measurement batch in the stored layout, built with numpy.

psycopg's `write_row` turns every value into bytes one by one (~1 µs per 27-value row); a batch
held as columns is laid out at once, as fixed-size records (field count, then per field its
length and big-endian value) in a structured array, every record first filled from one template
(the count and each field's length) and then the values written — not field by field but a run
of fields at a time: the stream carries its fields grouped by type (the bigint keys and steps,
then the integer steps, then the exact doubles; the COPY statement lists the columns in the
stream's order, `CopyStream.columns`), so a run of same-typed fields is one sub-array of the
record, written from one matrix in one call. Per chunk of a streamed batch that is a few dozen
numpy calls whatever the width of the row, where a call per field and a Python object per
column cost ~0.3 ms a chunk (bench/README.md, issue 26).

Each value becomes two fields (`storage.layout`): its integer steps (int4 or int8) and its exact
double, one of them null; the split runs on all value columns at once. Fields null in every row
are left out of the stream and of its COPY statement's column list (they take their default,
NULL): a batch at its resolutions has 24 such exact-double columns, and PostgreSQL's COPY costs
less the fewer fields a row has. Fields null in some rows (a value finer than its resolution in
a few rows makes both halves of it so) give rows of a few shapes: each shape's rows are laid out
as fixed-size records of their own, one block after the other (no per-byte work); a batch of
many shapes is laid out in full and the value bytes of its null cells cut out with one boolean
mask. Format: "COPY — Binary Format" in the PostgreSQL manual; timestamps are µs since
2000-01-01.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from fleetcore import MEASUREMENT_VALUE_FIELDS, MeasurementColumns
from fleetcore.resolution import RESOLUTIONS

from ingestd.storage.layout import field_bounds, scaled_column, split_steps

__all__ = [
    "COPY_COLUMNS",
    "COPY_HEADER",
    "COPY_TRAILER",
    "CopyStream",
    "copy_stream",
]

COPY_COLUMNS: tuple[str, ...] = (
    "time",
    "device_id",
    "received_at",
    *(scaled_column(f) for f in MEASUREMENT_VALUE_FIELDS),
    *MEASUREMENT_VALUE_FIELDS,
    "customer_id",
)
"""The stored table's columns that ingest writes (a COPY stream carries those of a batch not
null in every row, in its own order: `CopyStream.columns`)."""

_SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + bytes(8)  # signature, flags, header extension length
_TRAILER = b"\xff\xff"
COPY_TRAILER = _TRAILER
COPY_HEADER = _SIGNATURE
_POSTGRES_EPOCH_US = 946_684_800_000_000  # 2000-01-01T00:00:00Z in µs since 1970
_KEYS = ("time", "device_id", "received_at", "customer_id")
"""The key fields, first in every stream (bigint): the first rows of the bigint matrix."""
_BIGINT, _INTEGER, _DOUBLE = ">i8", ">i4", ">f8"
_KINDS = (_BIGINT, _INTEGER, _DOUBLE)
"""The stream's groups of fields, in order: a field's kind is the index of its type here."""
_STEPS_KIND = {
    f: _KINDS.index(_BIGINT if RESOLUTIONS[f].storage_type == "bigint" else _INTEGER)
    for f in MEASUREMENT_VALUE_FIELDS
}
_MAX_SHAPES = 16
"""Up to this many null shapes (which partly-null fields a row holds), a stream is laid out
shape by shape (fixed-size records, no mask); past it, by cutting a mask out of full records."""
_FEW_PARTIAL = 8
"""Up to this many partly-null fields, a row's shape code (a bit per field) indexes a count of
each shape (`np.bincount`, one pass); past it, the shapes are found by sorting (`np.unique`)."""

Index = npt.NDArray[np.intp]
Mask = npt.NDArray[np.bool_]


@dataclass(frozen=True, slots=True)
class CopyStream:
    """A binary COPY stream (or part of one) and the columns it carries, in the stream's order:
    those not null in every row of the batch (the others are left out of the statement, and
    take their default, NULL). A field costs PostgreSQL's COPY work even when null: a batch of
    values at their resolution leaves the 24 exact-double columns null in every row, and
    COPYing 29 columns instead of 52 cost PostgreSQL ~4.1 instead of ~5.0 µs/row of CPU (5,000-row
    batches, bench/README.md) and 92 bytes less per row on the wire."""

    columns: tuple[str, ...]
    data: bytes


@functools.lru_cache(maxsize=256)
def _bounds(present: tuple[str, ...]) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """`field_bounds` of the value columns `present` (a fleet's batches come in a few sets), as
    column vectors: bounds laid out as wide as the values cost numpy's multiply, divide and
    compare less in a loop over the same batch, but ~0.03 µs/row more in a chunk's whole way
    (their ~1 MB read from memory again after the decode; bench/HISTORY.md, the jsoncpu pass)."""
    return field_bounds([RESOLUTIONS[name] for name in present])


@dataclass(frozen=True, slots=True)
class _Layout:
    """The record type of one shape of rows: `dtype`, one record's bytes with the count and
    every length filled in (`template`), and its runs: (sub-array field, kind, the run's first
    and past-last rows in that kind's matrix)."""

    dtype: np.dtype[np.void]
    template: bytes
    runs: tuple[tuple[str, int, int, int], ...]


@functools.lru_cache(maxsize=128)
def _layout(kinds: tuple[int, ...], present: tuple[bool, ...]) -> _Layout:
    """The record of a stream whose fields have `kinds` (grouped: every field of a kind after
    those of the kind before), each present or null in these rows (`present`): every run of
    present fields of one kind one sub-array of (length, value) pairs, a null field its
    length alone (-1). Made once per shape: batches of a fleet come in a few."""
    layout: list[tuple[str, np.dtype[np.void] | str, tuple[int, ...]]] = [("count", ">i2", ())]
    runs = []
    lengths: list[tuple[str, int]] = []
    group_start = {kind: kinds.index(kind) for kind in set(kinds)}
    i = 0
    while i < len(kinds):
        kind = kinds[i]
        if not present[i]:
            layout.append((f"null{i}", ">i4", ()))
            lengths.append((f"null{i}", -1))
            i += 1
            continue
        j = i + 1
        while j < len(kinds) and kinds[j] == kind and present[j]:
            j += 1
        pair = np.dtype([("len", ">i4"), ("value", _KINDS[kind])])
        layout.append((f"run{i}", pair, (j - i,)))
        runs.append((f"run{i}", kind, i - group_start[kind], j - group_start[kind]))
        lengths.append((f"run{i}", np.dtype(_KINDS[kind]).itemsize))
        i = j
    dtype = np.dtype([(name, kind, shape) for name, kind, shape in layout])
    record = np.zeros((), dtype)
    record["count"] = len(kinds)
    for name, length in lengths:
        if name.startswith("run"):
            record[name]["len"] = length
        else:
            record[name] = length
    return _Layout(dtype, record.tobytes(), tuple(runs))


def _records(
    matrices: tuple[npt.NDArray[np.generic], ...],
    kinds: tuple[int, ...],
    present: tuple[bool, ...],
    rows: int,
    index: Index | None,
) -> npt.NDArray[np.void]:
    """The records of the rows `index` (all when None), every one with the fields `present`:
    each run's values from its kind's matrix (one row per field) in one assignment (the integer
    steps' cast from their doubles as they are written)."""
    layout = _layout(kinds, present)
    records = np.frombuffer(bytearray(layout.template) * rows, layout.dtype)  # writable
    with np.errstate(invalid="ignore"):  # the integer steps' doubles where a cell is null: cut
        for name, kind, first, last in layout.runs:
            values = matrices[kind][first:last]
            records[name]["value"] = (values if index is None else values[:, index]).T
    return records


def _integers(steps: npt.NDArray[np.float64]) -> npt.NDArray[np.int64]:
    """Steps as integers (exact where whole; whatever a null cell's double casts to elsewhere,
    which no stream carries)."""
    with np.errstate(invalid="ignore"):
        return steps.astype(np.int64)


def _cut_nulls(
    matrices: tuple[npt.NDArray[np.generic], ...],
    kinds: tuple[int, ...],
    absent: list[tuple[int, Mask]],
    rows: int,
) -> npt.NDArray[np.uint8]:
    """Records laid out with every field present, the value bytes of null cells cut out (one
    boolean mask over the buffer; for batches with many null shapes). `absent`: each partly
    null field's position and where it is null."""
    records = _records(matrices, kinds, (True,) * len(kinds), rows, None)
    flat = records.view(np.uint8).reshape(rows, records.dtype.itemsize)
    sizes = [np.dtype(_KINDS[k]).itemsize for k in kinds]
    offsets = np.cumsum([2 + 4, *(4 + size for size in sizes[:-1])]).tolist()  # each value's
    keep = np.ones(flat.shape, np.bool_)
    for i, nulls in absent:
        start = offsets[i]
        flat[nulls, start - 4 : start] = 0xFF  # length -1
        keep[nulls, start : start + sizes[i]] = False
    return flat[keep]


_NOWHERE, _SOMEWHERE, _EVERYWHERE = 0, 1, 2


def _where(counts: list[int], rows: int) -> tuple[int, ...]:
    """Each field's count of rows as where it is: nowhere, in some rows, in every row."""
    return tuple(_NOWHERE if not c else _EVERYWHERE if c == rows else _SOMEWHERE for c in counts)


@dataclass(frozen=True, slots=True)
class _Plan:
    """A stream's fields for one set of value columns and where their halves are (`_plan`):
    the columns and each one's kind, in the stream's order; the value rows of the bigint and
    integer steps and of the exact doubles; the fields null in some rows only, as (position in
    the stream, value row, whether it is the exact double)."""

    columns: tuple[str, ...]
    kinds: tuple[int, ...]
    steps: tuple[list[int], list[int]]
    doubles: list[int]
    partial: tuple[tuple[int, int, bool], ...]


@functools.lru_cache(maxsize=256)
def _plan(present: tuple[str, ...], scaled: tuple[int, ...], exact: tuple[int, ...]) -> _Plan:
    """The `_Plan` of the value columns `present` whose integer steps and exact doubles are
    where `scaled` and `exact` say (`_where`): a field is carried when it holds a value in some
    row. Made once per combination: a fleet's batches come in a few."""
    names: list[list[str]] = [list(_KEYS), [], []]
    partial: list[list[int | None]] = [[None] * len(_KEYS), [], []]  # the value row, when partial
    steps: tuple[list[int], list[int]] = ([], [])
    for i, name in enumerate(present):
        if scaled[i] != _NOWHERE:
            kind = _STEPS_KIND[name]
            steps[kind].append(i)
            names[kind].append(scaled_column(name))
            partial[kind].append(i if scaled[i] == _SOMEWHERE else None)
    doubles = [i for i in range(len(present)) if exact[i] != _NOWHERE]
    names[2] = [present[i] for i in doubles]
    partial[2] = [i if exact[i] == _SOMEWHERE else None for i in doubles]
    kinds = tuple(kind for kind in range(len(_KINDS)) for _ in names[kind])
    rows = [(row, kind == 2) for kind, group in enumerate(partial) for row in group]
    return _Plan(
        tuple(name for group in names for name in group),
        kinds,
        steps,
        doubles,
        tuple((at, row, exact) for at, (row, exact) in enumerate(rows) if row is not None),
    )


_KEYS_ONLY = _plan((), (), ())


def copy_stream(
    batch: MeasurementColumns, customer_id: int, *, header: bool = True, trailer: bool = True
) -> CopyStream:
    """The complete binary COPY stream (header, one tuple per row, trailer) of `batch`'s rows
    with the fields of `COPY_COLUMNS` that are not null in every row (`CopyStream.columns`, in
    the stream's order: the keys, the bigint steps, the integer steps, the exact doubles);
    every key column must be non-null in every row.

    A field null in some rows only (a value null there, or its scaled/exact half that the row
    does not use: one value finer than its resolution makes both halves partly null) changes
    the record's length, so rows are laid out in groups that share a shape — within a group in
    batch order; the groups one after the other, which changes the order the rows are inserted
    in, not what is stored. Without `header` / `trailer`: the tuples alone (a stream sent in
    parts: the first with the header, the last with the trailer)."""
    head, tail = (_SIGNATURE if header else b""), (_TRAILER if trailer else b"")
    rows = batch.rows
    given = batch.columns
    keys = np.empty((len(_KEYS), rows), np.int64)
    np.subtract(given["time"].values, _POSTGRES_EPOCH_US, out=keys[0])
    keys[1] = given["device_id"].values
    np.subtract(given["received_at"].values, _POSTGRES_EPOCH_US, out=keys[2])
    keys[3] = customer_id
    present = tuple(
        name
        for name in MEASUREMENT_VALUE_FIELDS
        if (c := given.get(name)) is not None and not (c.nulls is not None and c.nulls.all())
    )
    absent: list[tuple[int, Mask]] = []
    if present:
        values = np.array([given[name].values for name in present], np.float64)
        nulls = None
        for i, name in enumerate(present):
            if (column_nulls := given[name].nulls) is not None:
                if nulls is None:
                    nulls = np.zeros(values.shape, np.bool_)
                nulls[i] = column_nulls
        steps, scaled = split_steps(values, nulls, *_bounds(present))
        scaled_counts: list[int] = np.count_nonzero(scaled, axis=1).tolist()
        if nulls is None:  # every value not whole steps is an exact double
            exact_counts = [rows - count for count in scaled_counts]
        else:
            exact_counts = np.count_nonzero(~(scaled | nulls), axis=1).tolist()
        plan = _plan(present, _where(scaled_counts, rows), _where(exact_counts, rows))
        matrices: tuple[npt.NDArray[np.generic], ...] = (
            np.concatenate((keys, _integers(steps[plan.steps[0]]))) if plan.steps[0] else keys,
            steps[plan.steps[1]],  # doubles, cast as they are written
            values[plan.doubles],
        )
        for at, i, exact in plan.partial:  # where each partly-null field is null
            if not exact:
                absent.append((at, ~scaled[i]))
            else:  # where the value is whole steps (or null)
                absent.append((at, scaled[i] if nulls is None else scaled[i] | nulls[i]))
    else:
        plan, matrices = _KEYS_ONLY, (keys,)
    kinds, columns = plan.kinds, plan.columns
    everywhere = (True,) * len(kinds)
    if not absent:
        records = _records(matrices, kinds, everywhere, rows, None)
        return CopyStream(columns, b"".join((head, records.data, tail)))
    if len(absent) > 62:
        cut = _cut_nulls(matrices, kinds, absent, rows)
        return CopyStream(columns, b"".join((head, cut.data, tail)))
    codes = np.zeros(rows, np.int64)
    for bit, (_, nulls_here) in enumerate(absent):
        codes |= nulls_here.astype(np.int64) << bit
    if len(absent) <= _FEW_PARTIAL:  # the codes index a count of each (no sort)
        shapes = np.flatnonzero(np.bincount(codes, minlength=1 << len(absent)))
    else:
        shapes, codes = np.unique(codes, return_inverse=True)
    if len(shapes) > _MAX_SHAPES:
        cut = _cut_nulls(matrices, kinds, absent, rows)
        return CopyStream(columns, b"".join((head, cut.data, tail)))
    parts: list[bytes | memoryview] = [head]
    for k, code in enumerate(shapes.tolist()):
        shape = list(everywhere)
        for bit, (i, _) in enumerate(absent):
            shape[i] = not (code >> bit) & 1
        key = code if len(absent) <= _FEW_PARTIAL else k
        index = np.flatnonzero(codes == key) if len(shapes) > 1 else None
        count = rows if index is None else len(index)
        parts.append(_records(matrices, kinds, tuple(shape), count, index).data)
    parts.append(tail)
    return CopyStream(columns, b"".join(parts))
