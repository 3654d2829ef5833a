"""A JSON measurement body decoded into columns: the same rows, times, nulls and refusals as
`parse_batch`'s rows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import msgspec
import numpy as np
from fleetcore import (
    MEASUREMENT_VALUE_FIELDS,
    BatchType,
    ValidationWindow,
    parse_batch,
    parse_measurement_columns,
)
from fleetcore.columnar import micros_from_datetime
from fleetcore.json_columns import columns_of_rows
from hypothesis import given, settings
from hypothesis import strategies as st

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
WIDE = ValidationWindow(NOW, timedelta(days=739_000), timedelta(days=2_900_000))
NARROW = ValidationWindow(NOW, timedelta(days=3650), timedelta(days=1))

offsets = st.integers(-23 * 60 + 1, 23 * 60 - 1).map(lambda m: timezone(timedelta(minutes=m)))
aware_times = st.one_of(
    st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=offsets),
    st.datetimes(
        min_value=datetime(2016, 1, 1), max_value=datetime(2026, 11, 28), timezones=offsets
    ),
)
values = st.one_of(
    st.none(),
    st.floats(min_value=-1e15, max_value=1e15, allow_nan=False),
    st.integers(-(10**6), 10**6).map(lambda k: k / 1000),
)


@st.composite
def items(draw: st.DrawFn) -> list[dict[str, Any]]:
    out = []
    for _ in range(draw(st.integers(1, 40))):
        item: dict[str, Any] = {
            "time": draw(aware_times),
            "device_id": draw(st.integers(0, 2**63 - 1)),
            "received_at": draw(aware_times),
        }
        for name in draw(st.lists(st.sampled_from(MEASUREMENT_VALUE_FIELDS), max_size=8)):
            item[name] = draw(values)
        out.append(item)
    return out


@settings(max_examples=200, deadline=None)
@given(items(), st.sampled_from([WIDE, NARROW]))
def test_columns_hold_exactly_the_rows_parse_batch_gives(
    batch: list[dict[str, Any]], window: ValidationWindow
) -> None:
    """Every valid row's times as exact µs (years 1-9999, any offset), ids, values bit for bit
    and nulls where a value is absent or null; refusals (outside the window too) and the time
    span as `parse_batch`'s."""
    body = msgspec.json.encode({"items": batch})
    rows = parse_batch(body, BatchType.MEASUREMENTS, window)
    parsed = parse_measurement_columns(body, window)
    assert [(r.index, r.reason) for r in parsed.rejections] == [
        (r.index, r.reason) for r in rows.rejections
    ]
    assert (parsed.first_time, parsed.last_time) == (rows.first_time, rows.last_time)
    columns = parsed.valid.columns
    assert parsed.valid.rows == len(rows.rows)
    if not rows.rows:
        return
    for key in ("time", "received_at"):
        expected = [micros_from_datetime(getattr(r, key)) for r in rows.rows]
        assert columns[key].values.tolist() == expected
    assert columns["device_id"].values.tolist() == [r.device_id for r in rows.rows]
    for name in MEASUREMENT_VALUE_FIELDS:
        sent = [getattr(r, name) for r in rows.rows]
        if name not in columns:
            assert all(v is None for v in sent)
            continue
        column = columns[name]
        nulls = column.null_mask().tolist()
        assert nulls == [v is None for v in sent]
        got = column.values.view(np.int64).tolist()
        want = np.array([0.0 if v is None else v for v in sent], np.float64).view(np.int64)
        assert got == want.tolist()


def test_a_batch_longer_than_a_chunk_keeps_its_order() -> None:
    """Rows past the first conversion chunk land in their own places (5,000 rows, every value
    distinct)."""
    body = msgspec.json.encode(
        {
            "items": [
                {"time": NOW - timedelta(seconds=i), "device_id": i, "received_at": NOW, "v1": i}
                for i in range(5000)
            ]
        }
    )
    columns = parse_measurement_columns(body, WIDE).valid.columns
    assert columns["device_id"].values.tolist() == list(range(5000))
    assert columns["v1"].values.tolist() == [float(i) for i in range(5000)]
    assert columns["time"].values[-1] == micros_from_datetime(NOW - timedelta(seconds=4999))


def test_no_rows_no_columns() -> None:
    """An empty batch is zero rows and no columns."""
    assert columns_of_rows([]).rows == 0
    assert parse_measurement_columns(b'{"items": []}', WIDE).valid.rows == 0
