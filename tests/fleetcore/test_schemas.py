"""Batch parsing and per-row validation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import msgspec
import pytest
from fleetcore import BatchFormatError, BatchType, MeasurementRow, ValidationWindow, parse_batch

from tests.samples import device, measurement, site

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
WINDOW = ValidationWindow(NOW, timedelta(days=365), timedelta(days=1))


def body(items: list[object]) -> bytes:
    return msgspec.json.encode({"items": items})


def test_valid_measurements_decode_to_rows() -> None:
    """A valid batch yields typed rows in batch order, with no rejections."""
    rows = [measurement(i, NOW - timedelta(minutes=i)) for i in range(1, 4)]
    parsed = parse_batch(body(rows), BatchType.MEASUREMENTS, WINDOW)
    assert [r.device_id for r in parsed.rows] == [1, 2, 3]
    assert isinstance(parsed.rows[0], MeasurementRow)
    assert parsed.rejections == []


def test_null_and_absent_values_mean_not_measured() -> None:
    """Values may be null or absent; integers are accepted as numbers."""
    row = {
        "device_id": 1,
        "time": "2026-11-27T11:00:00+01:00",
        "received_at": "2026-11-27T11:00:01Z",
        "v1": None,
        "freq": 50,
    }
    parsed = parse_batch(body([row]), BatchType.MEASUREMENTS, WINDOW)
    assert parsed.rows[0].v1 is None and parsed.rows[0].v2 is None and parsed.rows[0].freq == 50.0


@pytest.mark.parametrize(
    ("override", "reason"),
    [
        ({"v1": "230"}, "Expected `float | null`, got `str`"),
        ({"v1": True}, "got `bool`"),
        ({"p_total": 1e16}, "<= 1000000000000000.0 - at `$.p_total`"),
        ({"device_id": -1}, ">= 0"),
        ({"device_id": 1.5}, "Expected `int`"),
        ({"time": "2026-11-27T11:00:00"}, "timezone"),
        ({"time": "not a time"}, "RFC3339"),
        ({"time": "2020-01-01T00:00:00Z"}, "older than the accepted horizon"),
        ({"time": "2026-11-29T00:00:00Z"}, "too far in the future"),
    ],
)
def test_bad_measurement_is_rejected_alone(override: dict[str, object], reason: str) -> None:
    """Each kind of bad value rejects its row with a reason naming the problem; neighbours pass."""
    rows = [
        measurement(1, NOW - timedelta(minutes=1)),
        {**measurement(2, NOW), **override},
        measurement(3, NOW),
    ]
    parsed = parse_batch(body(rows), BatchType.MEASUREMENTS, WINDOW)
    assert [r.device_id for r in parsed.rows] == [1, 3]
    assert len(parsed.rejections) == 1
    rejection = parsed.rejections[0]
    assert rejection.index == 1
    assert reason in rejection.reason
    assert '"device_id"' in rejection.payload


def test_missing_required_field_is_rejected() -> None:
    """A row without device_id is rejected with a reason naming the field."""
    row = measurement(1, NOW)
    del row["device_id"]
    parsed = parse_batch(body([row]), BatchType.MEASUREMENTS, WINDOW)
    assert parsed.rows == []
    assert "device_id" in parsed.rejections[0].reason


def test_row_that_is_not_an_object_is_rejected() -> None:
    """A list item that is not an object is one rejected row."""
    parsed = parse_batch(b'{"items": [42, null, "x"]}', BatchType.SITES, WINDOW)
    assert [r.index for r in parsed.rejections] == [0, 1, 2]


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b"", "invalid_json"),
        (b"{", "invalid_json"),
        (b"[]", "invalid_batch"),
        (b'{"items": null}', "invalid_batch"),
        (b'{"items": ' + b"[" * 10000 + b"]" * 10000 + b"}", "invalid_json"),
    ],
)
def test_whole_body_problems_raise(raw: bytes, code: str) -> None:
    """Only a body that is not JSON or has no items list fails as a whole."""
    with pytest.raises(BatchFormatError) as info:
        parse_batch(raw, BatchType.MEASUREMENTS, WINDOW)
    assert info.value.code == code


def test_full_set_keeps_ids_of_rejected_rows() -> None:
    """ids_seen includes the id of a rejected row, so the server does not mark it deleted."""
    rows = [site(1), site(2, name=""), device(3)]  # empty name; a device row in a sites batch
    parsed = parse_batch(body(rows), BatchType.SITES, WINDOW)
    assert [r.id for r in parsed.rows] == [1]
    assert parsed.ids_seen == {1, 2, 3}


def test_full_set_duplicates_last_wins() -> None:
    """A repeated id in a full set keeps the last row and counts one duplicate."""
    parsed = parse_batch(
        body([device(1, model="A"), device(2), device(1, model="B")]), BatchType.DEVICES, WINDOW
    )
    assert {r.id: r.model for r in parsed.rows} == {1: "B", 2: "Acuvim IIR"}
    assert parsed.duplicates == 1
    assert parsed.total == 3
