"""A small JSON measurement body (a gateway's minute, a few dozen rows) decoded the short way
gives the long way's answer: `clean_measurement_columns` reads a small body's rows with their
times as text (`fleetcore.json_small`); the reference is the typed rows' way it took before
(msgspec's `MeasurementRow`s, `columns_of_rows`, the window on the columns)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
from fleetcore import MEASUREMENT_VALUE_FIELDS, ParsedColumns, ValidationWindow
from fleetcore.json_batch import decode_measurement_rows
from fleetcore.json_columns import (
    clean_measurement_columns,
    columns_of_rows,
    inside_window,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fleetcore.small_answers import answer
from tests.fleetcore.test_json_columns import NARROW, WIDE, items, text_items

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
WINDOW = ValidationWindow(NOW, timedelta(days=365), timedelta(days=1))


def _typed_reference(body: bytes, window: ValidationWindow) -> ParsedColumns | None:
    """`clean_measurement_columns` of a small body as it was: typed rows, then columns."""
    rows = decode_measurement_rows(body)
    if rows is None:
        return None
    columns = columns_of_rows(rows)
    if not columns.rows:
        return ParsedColumns(columns)
    return inside_window(columns, window)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(items(), text_items()), st.sampled_from([WIDE, NARROW]))
def test_a_small_json_body_gives_the_typed_rowsanswer(
    batch: list[dict[str, Any]], window: ValidationWindow
) -> None:
    """Columns bit for bit, nulls, the time span; a body the typed way does not take whole
    (a refused row, a time outside the window) the short way does not take either."""
    body = msgspec.json.encode({"items": batch})
    assert answer(clean_measurement_columns(body, window)) == answer(_typed_reference(body, window))


def test_a_gateway_minute_with_shared_times_and_nulls() -> None:
    """27 meters sharing their sample time, one without phase values (nulls), in the window."""
    rows = []
    for meter in range(1, 28):
        row: dict[str, Any] = {
            "time": "2026-11-27T11:59:00+01:00",
            "device_id": meter,
            "received_at": "2026-11-27T10:59:03.5Z",
        }
        for j, name in enumerate(MEASUREMENT_VALUE_FIELDS):
            row[name] = None if meter == 5 and j < 3 else round(200 + meter + j / 10, 1)
        rows.append(row)
    body = msgspec.json.encode({"items": rows})
    fast = clean_measurement_columns(body, WINDOW)
    assert fast is not None and fast.valid.rows == 27
    assert answer(fast) == answer(_typed_reference(body, WINDOW))
    assert fast.valid.columns["v1"].null_mask().tolist() == [i == 4 for i in range(27)]


def test_a_small_json_body_at_the_window_edges() -> None:
    """Times at the window's edges are inside; a µs past either edge leaves the body to the
    row-by-row path, as the typed way does."""
    tick = timedelta(microseconds=1)
    for edge, inside in (
        (WINDOW.earliest, True),
        (WINDOW.latest, True),
        (WINDOW.earliest - tick, False),
        (WINDOW.latest + tick, False),
    ):
        rows = [
            {"time": NOW, "device_id": 1, "received_at": NOW, "v1": 1.5},
            {"time": edge, "device_id": 2, "received_at": NOW, "v1": 2.5},
        ]
        body = msgspec.json.encode({"items": rows})
        fast = clean_measurement_columns(body, WINDOW)
        assert (fast is not None) is inside
        assert answer(fast) == answer(_typed_reference(body, WINDOW))
