"""The push cursor's ordering and wire form."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from fleetcore import CursorFormatError, PushCursor


def test_cursor_round_trips_through_its_wire_form() -> None:
    """encode/decode are inverse, including offsets other than UTC."""
    cursor = PushCursor(
        123456789,
        42,
        datetime(2026, 11, 26, 10, 15, 0, 113000, tzinfo=timezone(timedelta(hours=1))),
    )
    assert PushCursor.decode(cursor.encode()) == cursor
    assert len(cursor.encode()) <= 256


def test_cursor_orders_by_xid_then_device_then_time() -> None:
    """Cursors compare in the order rows are read: transaction id, device, time."""
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    assert PushCursor.start() < PushCursor(1, 0, t0)
    assert PushCursor(1, 5, t0) < PushCursor(2, 0, t0)
    assert PushCursor(1, 5, t0) < PushCursor(1, 6, t0 - timedelta(days=1))
    assert PushCursor(1, 5, t0) < PushCursor(1, 5, t0 + timedelta(microseconds=1))


@pytest.mark.parametrize(
    "text", ["", "1:2", "x:2:2026-01-01T00:00:00+00:00", "1:2:2026-01-01T00:00:00", "1:2:yesterday"]
)
def test_malformed_cursor_is_refused(text: str) -> None:
    """A cursor that does not parse (or has a time without offset) raises CursorFormatError."""
    with pytest.raises(CursorFormatError):
        PushCursor.decode(text)
