"""The limits of one batch (fleetcore.limits): rows, refused rows, compressed members, and the
item count read from the bytes before any row is built."""

from __future__ import annotations

import json
import time
import tracemalloc
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fleetcore import (
    MAX_BATCH_ROWS,
    MAX_REJECTED_ROWS,
    BatchFormatError,
    BatchType,
    ValidationWindow,
    columns_from_rows,
    encode_columns,
    parse_batch,
    parse_columnar_batch,
    zstd_compress,
    zstd_decompress,
)
from fleetcore.compression import TooManyMembers
from fleetcore.jsonscan import max_items
from hypothesis import given, settings
from hypothesis import strategies as st

WINDOW = ValidationWindow(datetime.now(UTC), timedelta(days=3660), timedelta(days=1))
NOW = datetime.now(UTC).isoformat()

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(alphabet='ab,[]{}"\\ \n'),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(alphabet='k,[]{}"\\', max_size=4), inner, max_size=4)
    ),
    max_leaves=12,
)


def _body(items: list[Any]) -> bytes:
    return json.dumps({"items": items}).encode()


@settings(max_examples=300, deadline=None)
@given(st.lists(json_values, max_size=12), st.sampled_from([1, 2, 3, 7, 1 << 20]))
def test_item_count_from_bytes_matches_a_decoder(items: list[Any], chunk: int) -> None:
    """The byte scan counts exactly the items a JSON decoder finds (one for an empty list),
    whatever strings, escapes and nesting they hold and wherever the chunks cut them."""
    import fleetcore.jsonscan as scan

    saved = scan._CHUNK
    scan._CHUNK = chunk
    try:
        assert max_items(_body(items)) == max(1, len(items))
    finally:
        scan._CHUNK = saved


def test_tiny_items_past_the_row_cap_are_refused_before_they_are_built() -> None:
    """`{"items":[{},{},…]}` with more items than a batch may have rows is `too_many_rows`,
    found from the bytes: no per-item objects are built (memory stays a few MB)."""
    body = b'{"items":[' + b",".join([b"{}"] * (MAX_BATCH_ROWS * 3)) + b"]}"
    tracemalloc.start()
    try:
        with pytest.raises(BatchFormatError) as caught:
            parse_batch(body, BatchType.MEASUREMENTS, WINDOW)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert caught.value.code == "too_many_rows"
    assert peak < 16 * 1024 * 1024


def test_valid_rows_past_the_row_cap_are_refused() -> None:
    """A JSON batch of MAX_BATCH_ROWS + 1 valid rows is `too_many_rows`, like a columnar one."""
    row = {"id": 1, "name": "s", "timezone": "UTC", "updated_at": NOW}
    body = _body([row] * (MAX_BATCH_ROWS + 1))
    with pytest.raises(BatchFormatError) as caught:
        parse_batch(body, BatchType.SITES, WINDOW)
    assert caught.value.code == "too_many_rows"


def _measurement(device: int, ok: bool) -> dict[str, Any]:
    return {"device_id": device, "time": NOW if ok else "not a time", "received_at": NOW}


@pytest.mark.parametrize("refused", [MAX_REJECTED_ROWS, MAX_REJECTED_ROWS + 1])
def test_refused_rows_past_the_limit_refuse_the_batch_whole(refused: int) -> None:
    """Up to MAX_REJECTED_ROWS refused rows are dead letters of a stored batch; one more and the
    whole batch is `too_many_rejections` (a pusher halves it; nothing is dead-lettered)."""
    items = [_measurement(i, ok=i >= refused) for i in range(refused + 10)]
    if refused <= MAX_REJECTED_ROWS:
        parsed = parse_batch(_body(items), BatchType.MEASUREMENTS, WINDOW)
        assert len(parsed.rejections) == refused and len(parsed.rows) == 10
        return
    with pytest.raises(BatchFormatError) as caught:
        parse_batch(_body(items), BatchType.MEASUREMENTS, WINDOW)
    assert caught.value.code == "too_many_rejections"


def test_columnar_refused_rows_past_the_limit_refuse_the_batch_whole() -> None:
    """A columnar batch with more refused rows than MAX_REJECTED_ROWS is refused whole too."""
    now = int(datetime.now(UTC).timestamp() * 1e6)
    rows = MAX_REJECTED_ROWS + 5
    batch = columns_from_rows(
        [
            {"device_id": -1 if i <= MAX_REJECTED_ROWS else i, "time": now, "received_at": now}
            for i in range(rows)
        ]
    )
    with pytest.raises(BatchFormatError) as caught:
        parse_columnar_batch(encode_columns(batch), WINDOW)
    assert caught.value.code == "too_many_rejections"


@pytest.mark.parametrize(
    ("kind", "item"),
    [
        (BatchType.SITES, {"id": 1, "name": "s", "timezone": "UTC", "updated_at": "0001-01-01T00:30:00+01:00"}),
        (BatchType.DEVICES, {"id": 1, "site_id": 1, "serial_number": "x", "model": "m", "updated_at": "9999-12-31T23:30:00-01:00"}),
        (BatchType.MEASUREMENTS, {"device_id": 1, "time": NOW, "received_at": "0001-01-01T00:00:00+00:01"}),
        (BatchType.MEASUREMENTS, {"device_id": 1, "time": NOW, "received_at": "9999-12-31T23:59:59-23:59"}),
    ],
)  # fmt: skip
def test_times_utc_cannot_hold_are_refused_rows(kind: BatchType, item: dict[str, Any]) -> None:
    """A time RFC 3339 allows but UTC cannot hold (year 1 with a positive offset, year 9999
    with a negative one) is a refused row with the reason, never an error later."""
    parsed = parse_batch(_body([item]), kind, WINDOW)
    assert len(parsed.rejections) == 1
    assert "outside years 1-9999 in UTC" in parsed.rejections[0].reason


def test_leap_second_is_a_refused_row() -> None:
    """A leap second written as :60 is refused with a reason, not an error."""
    parsed = parse_batch(
        _body([{"device_id": 1, "time": "2016-12-31T23:59:60Z", "received_at": NOW}]),
        BatchType.MEASUREMENTS,
        WINDOW,
    )
    assert len(parsed.rejections) == 1


def test_zstd_frames_past_the_limit_are_refused_at_once() -> None:
    """A zstd body of a million empty frames is refused after MAX_BODY_MEMBERS of them, in
    milliseconds, never decoded frame by frame (issue 19: minutes before)."""
    body = zstd_compress(b"") * 1_000_000
    started = time.perf_counter()
    with pytest.raises(TooManyMembers):
        zstd_decompress(body, 64 * 1024 * 1024)
    assert time.perf_counter() - started < 5
    assert zstd_decompress(zstd_compress(b"a") * 3, 10) == b"aaa"
