"""The binary COPY stream of a batch holds each row's fields as a row-by-row reference lays them out.

`ingestd.storage.copybuffer` lays out whole runs of fields at once, rows grouped by null shape
(or, past a few shapes, full records with the null cells cut out); the reference here splits
each value with `fleetcore.resolution.scaled_or_none` and packs it with `struct`, one cell at a
time. The database round trip is tests/ingestd/test_scaled_storage.py's.
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
from fleetcore import MEASUREMENT_VALUE_FIELDS, MeasurementColumns
from fleetcore.columnar import Column
from fleetcore.resolution import RESOLUTIONS, scaled_or_none
from hypothesis import given, settings
from hypothesis import strategies as st
from ingestd.storage.copybuffer import COPY_HEADER, COPY_TRAILER, copy_stream
from ingestd.storage.layout import scaled_column

_EPOCH_US = 946_684_800_000_000
_CUSTOMER = 41

Row = tuple[tuple[str, bytes | None], ...]


def _rows_of(data: bytes, columns: tuple[str, ...]) -> list[Row]:
    """The tuples of a COPY stream (without header and trailer), each as (column, bytes) pairs."""
    rows, at = [], 0
    while at < len(data):
        (count,) = struct.unpack_from(">h", data, at)
        at += 2
        assert count == len(columns)
        cells: dict[str, bytes | None] = {}
        for name in columns:
            (length,) = struct.unpack_from(">i", data, at)
            at += 4
            cells[name] = None if length < 0 else data[at : at + length]
            at += max(length, 0)
        rows.append(tuple(sorted(cells.items())))
    return sorted(rows, key=repr)


def _reference(keys: list[tuple[int, int, int]], values: list[list[float | None]]) -> list[Row]:
    """Each row's fields, one cell at a time: the steps when the value is whole steps at its
    resolution, the double otherwise."""
    rows = []
    for (time, device, received), row in zip(keys, values, strict=True):
        cells: dict[str, bytes | None] = {
            "time": struct.pack(">q", time - _EPOCH_US),
            "device_id": struct.pack(">q", device),
            "received_at": struct.pack(">q", received - _EPOCH_US),
            "customer_id": struct.pack(">q", _CUSTOMER),
        }
        for name, value in zip(MEASUREMENT_VALUE_FIELDS, row, strict=True):
            resolution = RESOLUTIONS[name]
            steps = None if value is None else scaled_or_none(value, resolution)
            code = ">q" if resolution.storage_type == "bigint" else ">i"
            cells[scaled_column(name)] = None if steps is None else struct.pack(code, steps)
            exact = value is not None and steps is None
            cells[name] = struct.pack(">d", value) if exact else None
        rows.append(cells)
    return sorted((tuple(sorted(r.items())) for r in rows), key=repr)


def _batch(
    keys: list[tuple[int, int, int]], values: list[list[float | None]]
) -> MeasurementColumns:
    columns: dict[str, Column] = {
        name: Column(np.array([k[i] for k in keys], np.int64))
        for i, name in enumerate(("time", "device_id", "received_at"))
    }
    for j, name in enumerate(MEASUREMENT_VALUE_FIELDS):
        cells = [row[j] for row in values]
        if all(v is None for v in cells):
            continue
        nulls = np.array([v is None for v in cells], np.bool_)
        data = np.array([0.0 if v is None else v for v in cells], np.float64)
        columns[name] = Column(data, nulls if nulls.any() else None)
    return MeasurementColumns(len(keys), columns)


_value = st.one_of(
    st.none(),
    st.sampled_from([0.0, -0.0, 0.1, 1e15, -1e300, 5e-324, 2.0**53, 230.4]),
    st.integers(-(10**7), 10**7).map(lambda k: k / 10.0),
    st.integers(-(10**7), 10**7).map(lambda k: k / 1000.0),
    st.floats(-1e9, 1e9, allow_nan=False),
)
_key = st.tuples(st.integers(0, 2**52), st.integers(1, 2**40), st.integers(0, 2**52))


@settings(max_examples=200, deadline=None)
@given(
    rows=st.lists(
        st.tuples(_key, st.lists(_value, min_size=24, max_size=24)), min_size=1, max_size=40
    ),
    sparse=st.sampled_from([None, 2, 5]),
)
def test_a_copy_stream_holds_every_row_as_the_reference_lays_it_out(
    rows: list[tuple[tuple[int, int, int], list[float | None]]], sparse: int | None
) -> None:
    """Random batches (whole steps, finer values, -0.0, values past the integers, nulls; with
    `sparse`, most values kept to a few columns so that whole columns are null and rows share
    few shapes) give a stream whose rows, read back field by field, are the reference's, with
    only the columns that hold a value somewhere, between the COPY header and trailer."""
    keys = [k for k, _ in rows]
    values: list[list[Any]] = [v for _, v in rows]
    if sparse is not None:
        values = [[v if j % sparse == 0 else None for j, v in enumerate(row)] for row in values]
    stream = copy_stream(_batch(keys, values), _CUSTOMER)
    assert stream.data.startswith(COPY_HEADER) and stream.data.endswith(COPY_TRAILER)
    body = stream.data[len(COPY_HEADER) : -len(COPY_TRAILER)]
    expected = _reference(keys, values)
    carried = {name for row in expected for name, cell in row if cell is not None}
    assert set(stream.columns) == carried
    assert len(stream.columns) == len(set(stream.columns))
    assert _rows_of(body, stream.columns) == sorted(
        (tuple(cell for cell in row if cell[0] in carried) for row in expected), key=repr
    )


def test_a_batch_of_many_null_shapes_is_laid_out_whole_and_cut() -> None:
    """A batch whose rows come in more null shapes than are laid out one by one (each row its
    own pattern of nulls and finer values) still gives every row as the reference does."""
    rng = np.random.default_rng(7)
    keys = [(10**15 + i, 1 + i % 5, 10**15 + 7 * i) for i in range(300)]
    values: list[list[float | None]] = [
        [
            None if rng.random() < 0.2 else (0.123456 if rng.random() < 0.3 else 230.4)
            for _ in MEASUREMENT_VALUE_FIELDS
        ]
        for _ in keys
    ]
    stream = copy_stream(_batch(keys, values), _CUSTOMER, header=False, trailer=False)
    assert _rows_of(stream.data, stream.columns) == _reference(keys, values)
