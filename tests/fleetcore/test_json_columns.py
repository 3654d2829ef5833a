"""A JSON measurement body decoded into columns: the same rows, times, nulls and refusals as
`parse_batch`'s rows, whichever way (typed rows, or times as text) the body takes."""

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
from fleetcore.json_batch import decode_measurement_rows
from fleetcore.json_columns import (
    chunk_body,
    columns_of_rows,
    edge_rows,
    item_spans,
    text_time_columns,
)
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


_TIMESPECS = ("seconds", "milliseconds", "microseconds")


@st.composite
def texts_of(draw: st.DrawFn, when: datetime) -> str:
    """A time as a gateway may write it: any fraction length, Z or +00:00 for UTC, sometimes a
    form only msgspec reads (lowercase t, no colon in the offset)."""
    text = when.isoformat(timespec=draw(st.sampled_from(_TIMESPECS)))
    if text.endswith("+00:00") and draw(st.booleans()):
        text = text[:-6] + "Z"
    if draw(st.integers(0, 9)) == 0:
        text = text.replace("T", "t")
    if draw(st.integers(0, 9)) == 0 and not text.endswith("Z"):
        text = text[:-3] + text[-2:]
    return text


@st.composite
def text_items(draw: st.DrawFn) -> list[dict[str, Any]]:
    out = draw(items())
    for item in out:
        for key in ("time", "received_at"):
            item[key] = draw(texts_of(item[key]))
        if draw(st.integers(0, 19)) == 0:
            item["v1"] = draw(st.sampled_from([1e16, -1e300, "230.4", True]))
    return out


@settings(max_examples=300, deadline=None)
@given(st.one_of(items(), text_items()))
def test_times_as_text_give_the_typed_rows_columns_or_leave_the_body_to_them(
    batch: list[dict[str, Any]],
) -> None:
    """Where the text-time way takes a body, its columns are the typed rows' columns bit for bit
    (times in µs, ids, values, nulls); a body with a row the typed way refuses it never takes."""
    body = msgspec.json.encode({"items": batch})
    typed = decode_measurement_rows(body)
    fast = text_time_columns(body)
    if typed is None:
        assert fast is None
        return
    if fast is None:
        return
    slow = columns_of_rows(typed)
    assert fast.rows == slow.rows
    assert set(fast.columns) == set(slow.columns)
    for name, column in slow.columns.items():
        got = fast.columns[name]
        assert got.values.dtype == column.values.dtype
        assert got.values.view(np.int64).tolist() == column.values.view(np.int64).tolist()
        assert got.null_mask().tolist() == column.null_mask().tolist()


def test_a_large_body_of_usual_times_takes_the_text_time_way() -> None:
    """A 2,000-row body with times as gateways write them (Z, offsets, fractions of 0-6 digits),
    nulls in its first rows only, is read without the typed rows and gives their columns bit for
    bit."""
    batch = [
        {
            "time": (NOW - timedelta(minutes=i)).isoformat(timespec=_TIMESPECS[i % 3]),
            "device_id": i % 27,
            "received_at": (NOW - timedelta(minutes=i, microseconds=-i)).isoformat()[:-6] + "Z",
            "v1": 230.0 + i / 10,
            "i1": None if i % 7 == 0 and i < 500 else i / 1000,
        }
        for i in range(2000)
    ]
    body = msgspec.json.encode({"items": batch})
    fast = text_time_columns(body)
    assert fast is not None
    typed = decode_measurement_rows(body)
    assert typed is not None
    slow = columns_of_rows(typed)
    for name, column in slow.columns.items():
        got = fast.columns[name].values.view(np.int64)
        assert got.tolist() == column.values.view(np.int64).tolist()
        assert fast.columns[name].null_mask().tolist() == column.null_mask().tolist()


def test_sample_times_shared_by_meters_give_the_typed_rows_micros() -> None:
    """A body whose 20 meters share each sample time (the way that reads each run of one text
    once), and the same rows by meter or scattered (each distinct text once), give the typed
    rows' µs; one shared time in a form only msgspec reads (a lowercase t) leaves
    the whole body to the typed way."""
    batch: list[dict[str, Any]] = [
        {
            "time": (NOW - timedelta(minutes=i // 20)).isoformat(
                timespec=_TIMESPECS[(i // 20) % 3]
            ),
            "device_id": i % 20,
            "received_at": (NOW + timedelta(microseconds=i)).isoformat(),
            "v1": 230.0 + i / 10,
        }
        for i in range(2000)
    ]
    by_meter = sorted(batch, key=lambda item: (item["device_id"], item["time"]))
    scattered = [batch[(i * 7) % len(batch)] for i in range(len(batch))]
    # in time order (runs of a text), then repeated times apart (no runs: each distinct once)
    for order in (batch, by_meter, scattered):
        other = msgspec.json.encode({"items": order})
        fast = text_time_columns(other)
        typed = decode_measurement_rows(other)
        assert fast is not None and typed is not None
        for name in ("time", "received_at"):
            assert fast.columns[name].values.tolist() == [
                micros_from_datetime(getattr(r, name)) for r in typed
            ]
    for i in range(100, 120):
        batch[i]["time"] = batch[i]["time"].replace("T", "t")
    odd = msgspec.json.encode({"items": batch})
    assert decode_measurement_rows(odd) is not None
    assert text_time_columns(odd) is None


def test_received_times_of_many_lengths_give_the_typed_rows_micros() -> None:
    """`received_at` texts of one length, of a few runs of lengths (a time without a fraction
    now and then), of a length each row (each fraction's digits in turn) give the typed rows'
    µs; one longer than any form, or not ASCII, leaves the body to the typed way."""

    def received(i: int, kind: str) -> str:
        when = NOW + timedelta(seconds=i, microseconds=i % 997)
        if kind == "one":
            return when.isoformat(timespec="microseconds")
        if kind == "few":
            return when.isoformat(timespec="seconds" if i % 500 == 7 else "milliseconds")
        return when.isoformat(timespec=_TIMESPECS[i % 3]).replace(
            "+00:00", "Z" if i % 2 else "+00:00"
        )

    for kind in ("one", "few", "each"):
        batch: list[dict[str, Any]] = [
            {"time": NOW.isoformat(), "device_id": i % 20, "received_at": received(i, kind)}
            for i in range(1500)
        ]
        body = msgspec.json.encode({"items": batch})
        fast = text_time_columns(body)
        typed = decode_measurement_rows(body)
        assert fast is not None and typed is not None, kind
        assert fast.columns["received_at"].values.tolist() == [
            micros_from_datetime(r.received_at) for r in typed
        ], kind
        for odd in ("2026-11-27T12:00:00.000000000000+00:00", "2026-11-27T12:00:00.5éZ"):
            changed = [dict(item) for item in batch]
            changed[900]["received_at"] = odd
            assert text_time_columns(msgspec.json.encode({"items": changed})) is None, (kind, odd)


def test_a_large_body_with_a_bad_row_says_which_and_why() -> None:
    """A large body with one row refused (a value past the bound) and one time only msgspec
    reads (a lowercase t) stores the others and refuses that row as `parse_batch` does."""
    batch: list[dict[str, Any]] = [
        {"time": NOW - timedelta(minutes=i), "device_id": i, "received_at": NOW, "v1": 1.5}
        for i in range(600)
    ]
    batch[10]["v1"] = 1e16
    batch[20]["time"] = (NOW - timedelta(minutes=20)).isoformat().replace("T", "t")
    body = msgspec.json.encode({"items": batch})
    assert len(body) >= 32 * 1024
    parsed = parse_measurement_columns(body, WIDE)
    rows = parse_batch(body, BatchType.MEASUREMENTS, WIDE)
    assert [(r.index, r.reason) for r in parsed.rejections] == [
        (r.index, r.reason) for r in rows.rejections
    ]
    assert [r.index for r in parsed.rejections] == [10]
    assert parsed.valid.rows == 599
    assert parsed.valid.columns["time"].values.tolist() == [
        micros_from_datetime(r.time) for r in rows.rows
    ]


def _item(i: int, moment: datetime) -> dict[str, Any]:
    return {"time": moment.isoformat(), "device_id": i, "received_at": NOW.isoformat(), "v1": 1.5}


def test_chunks_start_small_and_grow_to_their_cap() -> None:
    """A body is cut into a first run of about `first` bytes, each next one `growth` times
    larger up to `most`, a short last run joined to the one before; the runs hold every item,
    in order, once."""
    items = [_item(i, NOW - timedelta(minutes=i)) for i in range(3000)]
    body = msgspec.json.encode({"items": items})
    spans = item_spans(body, 4096, 64 * 1024, 4)
    assert spans is not None
    sizes = [end - start for start, end in spans]
    assert [round(s / 1024) for s in sizes[:3]] == [4, 16, 64]
    assert all(abs(s - 64 * 1024) < 200 for s in sizes[3:-1])
    assert 32 * 1024 <= sizes[-1] < 96 * 1024 + 200
    decoded = [msgspec.json.decode(chunk_body(body, span))["items"] for span in spans]
    assert [item for chunk in decoded for item in chunk] == items
    assert item_spans(body, len(body), len(body)) is None  # one run: not cut


def test_edge_rows_are_the_first_and_last_items_when_valid_and_inside_the_window() -> None:
    """The keys a stream probes and makes partitions for: the body's first and last items as
    rows, or None when either is refused or outside the window (the batch then goes whole)."""
    items = [_item(i, NOW - timedelta(minutes=i)) for i in range(400)]
    body = msgspec.json.encode({"items": items})
    spans = item_spans(body, 2048, 4096)
    assert spans is not None and len(spans) > 2
    edges = edge_rows(body, spans, NARROW)
    assert edges is not None
    assert [(r.device_id, r.time) for r in edges] == [(0, NOW), (399, NOW - timedelta(minutes=399))]
    for broken in ({**items[0], "v1": "high"}, {**items[0], "time": "2001-01-01T00:00:00Z"}):
        body = msgspec.json.encode({"items": [*items[:-1], broken]})
        spans = item_spans(body, 2048, 4096)
        assert spans is not None and edge_rows(body, spans, NARROW) is None
