"""A small columnar batch (a gateway's minute) whose extremes pass skips the row checks
(`parse_columnar_batch`, `fleetcore.columnar_small.Extremes`) and gives their answer: the
reference is the numpy decoder's batch checked row by row (`check_rows`)."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from fleetcore import (
    MEASUREMENT_VALUE_FIELDS,
    BatchFormatError,
    ValidationWindow,
    columns_from_rows,
    decode_columns,
    encode_columns,
    parse_columnar_batch,
)
from fleetcore.columnar import COLUMN_NAMES, Column, MeasurementColumns, declared_rows
from fleetcore.columnar_batch import check_rows
from fleetcore.columnar_read import Reader
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fleetcore.small_answers import answer

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
WINDOW = ValidationWindow(NOW, timedelta(days=365), timedelta(days=1))


good_values = st.one_of(
    st.none(),
    st.builds(lambda k, s: k / 10**s, st.integers(-(10**9), 10**9), st.integers(0, 4)),
    st.sampled_from([0.0, -0.0, 1e15, -1e15, 999999999999999.9, -1e15 + 0.125]),
    st.floats(-1e15, 1e15),
)
BAD_VALUES = [1e15 + 1, -1e15 - 1, 1e15 + 0.125, -1e15 - 0.25, 2e15, -9e15, 1e16]
"""Past ±10^15: as decimal columns (those under 2^53 / 10^scale) and as float64 ones."""
bad_values = st.sampled_from([*BAD_VALUES, math.nan, math.inf, -math.inf])


@st.composite
def meter_minutes(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Rows as a gateway sends them, valid but for at most a few flaws: a time outside the
    window or the batch's times spread, an id out of range, a value out of bounds (just past
    ±10^15 too) or not finite; nulls anywhere."""
    rows = []
    when = NOW + timedelta(seconds=draw(st.integers(-400 * 86400, 2 * 86400)))
    spread = draw(st.sampled_from([0, 0, 1, 3600, 86400 * 500]))
    for i in range(draw(st.integers(1, 64))):
        row: dict[str, Any] = {
            "time": when - timedelta(seconds=draw(st.integers(0, spread))),
            "device_id": i + 1,
            "received_at": NOW,
        }
        for name in draw(st.lists(st.sampled_from(MEASUREMENT_VALUE_FIELDS), max_size=6)):
            row[name] = draw(good_values)
        rows.append(row)
    for _ in range(draw(st.sampled_from([0, 0, 0, 1, 2]))):
        row = rows[draw(st.integers(0, len(rows) - 1))]
        if draw(st.booleans()):
            row["device_id"] = draw(st.sampled_from([-1, -(2**63), 2**63 - 1]))
        row[draw(st.sampled_from(MEASUREMENT_VALUE_FIELDS))] = draw(bad_values)
    return [{name: row[name] for name in COLUMN_NAMES if name in row} for row in rows]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(meter_minutes(), st.booleans(), st.randoms(use_true_random=False), st.booleans())
def test_a_small_columnar_batch_gives_the_row_checksanswer(
    rows: list[dict[str, Any]], null_key: bool, rng: random.Random, shuffled: bool
) -> None:
    """The same valid rows (bits, nulls), rejections (indexes, reasons, payloads) and time span
    as the numpy decoder's batch checked row by row, whatever the order of the body's columns
    (senders put the key columns first; a body may not)."""
    batch = columns_from_rows(rows)
    if null_key:  # a row without a device: refused
        columns = dict(batch.columns)
        nulls = np.zeros(batch.rows, np.bool_)
        nulls[-1] = True
        columns["device_id"] = Column(batch.columns["device_id"].values, nulls)
        batch = MeasurementColumns(batch.rows, columns)
    if shuffled:
        names = list(batch.columns)
        rng.shuffle(names)
        batch = MeasurementColumns(batch.rows, {name: batch.columns[name] for name in names})
    body = encode_columns(batch)
    fast = parse_columnar_batch(body, WINDOW)
    slow = check_rows(decode_columns(body, small_rows=0), WINDOW)
    assert answer(fast) == answer(slow)


@pytest.mark.parametrize("bad", BAD_VALUES)
@pytest.mark.parametrize("others", [[], [1.5], [123.45, -7.0], [1e15, -1e15]])
def test_a_value_just_past_the_bounds_is_refused(bad: float, others: list[float]) -> None:
    """A value past ±10^15, alone in its column or beside others (whatever the column's scale
    and width), refuses its row as the row checks do."""
    rows = [
        {"time": NOW, "device_id": i + 1, "received_at": NOW, "v1": value}
        for i, value in enumerate([*others, bad])
    ]
    body = encode_columns(columns_from_rows(rows))
    fast = parse_columnar_batch(body, WINDOW)
    assert [r.index for r in fast.rejections] == [len(others)]
    assert answer(fast) == answer(check_rows(decode_columns(body, small_rows=0), WINDOW))


def _declared_by_reader(body: bytes | bytearray | memoryview) -> int | None:
    reader = Reader(body)
    try:
        reader.byte()
        return reader.varint()
    except BatchFormatError:
        return None


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=12), st.sampled_from([bytes, bytearray, memoryview]))
def test_declared_rows_reads_the_header_as_a_reader_does(
    data: bytes, kind: type[bytes] | type[bytearray] | type[memoryview]
) -> None:
    """The declared row count (its one-byte shortcut included) is what reading the version and
    the varint gives, or None where they cannot be read."""
    assert declared_rows(kind(data)) == _declared_by_reader(kind(data))
