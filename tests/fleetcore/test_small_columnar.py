"""A small columnar batch (a gateway's minute) whose extremes pass skips the row checks
(`parse_columnar_batch`, `fleetcore.columnar_small.Extremes`) and gives their answer: the
reference is the numpy decoder's batch checked row by row (`check_rows`)."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from fleetcore import (
    MEASUREMENT_VALUE_FIELDS,
    ValidationWindow,
    columns_from_rows,
    decode_columns,
    encode_columns,
    parse_columnar_batch,
)
from fleetcore.columnar import COLUMN_NAMES, Column, MeasurementColumns
from fleetcore.columnar_batch import check_rows
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fleetcore.small_answers import answer

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
WINDOW = ValidationWindow(NOW, timedelta(days=365), timedelta(days=1))


row_values = st.one_of(
    st.none(),
    st.builds(lambda k, s: k / 10**s, st.integers(-(10**9), 10**9), st.integers(0, 4)),
    st.sampled_from([0.0, -0.0, 1e15, -1e15, 1e16, -2e15, math.nan, math.inf, -math.inf]),
    st.floats(-1e16, 1e16),
)


@st.composite
def meter_minutes(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Rows as a gateway sends them, mostly valid: times around now (some outside the window),
    ids sometimes negative, values sometimes out of bounds or not finite, sometimes null."""
    rows = []
    when = NOW + timedelta(seconds=draw(st.integers(-400 * 86400, 2 * 86400)))
    for i in range(draw(st.integers(1, 64))):
        spread = draw(st.sampled_from([0, 0, 0, 1, 86400 * 500]))
        row: dict[str, Any] = {
            "time": when - timedelta(seconds=draw(st.integers(0, spread))),
            "device_id": draw(st.sampled_from([i + 1, i + 1, i + 1, -1, 2**63 - 1])),
            "received_at": NOW,
        }
        for name in draw(st.lists(st.sampled_from(MEASUREMENT_VALUE_FIELDS), max_size=6)):
            row[name] = draw(row_values)
        rows.append({name: row[name] for name in COLUMN_NAMES if name in row})
    return rows


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(meter_minutes(), st.booleans())
def test_a_small_columnar_batch_gives_the_row_checksanswer(
    rows: list[dict[str, Any]], null_key: bool
) -> None:
    """The same valid rows (bits, nulls), rejections (indexes, reasons, payloads) and time span
    as the numpy decoder's batch checked row by row."""
    batch = columns_from_rows(rows)
    if null_key:  # a row without a device: refused
        columns = dict(batch.columns)
        nulls = np.zeros(batch.rows, np.bool_)
        nulls[-1] = True
        columns["device_id"] = Column(batch.columns["device_id"].values, nulls)
        batch = MeasurementColumns(batch.rows, columns)
    body = encode_columns(batch)
    fast = parse_columnar_batch(body, WINDOW)
    slow = check_rows(decode_columns(body, small_rows=0), WINDOW)
    assert answer(fast) == answer(slow)
