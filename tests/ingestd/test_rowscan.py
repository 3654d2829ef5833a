"""The C scanner (`ingestd.rowscan`): where it takes a JSON measurement body, the same columns as
fleetcore's msgspec way, bit for bit; anything not in a pusher's form is left to that way, and the
decoding path then answers as before."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import numpy as np
import pytest
from fleetcore import MEASUREMENT_VALUE_FIELDS, ValidationWindow, parse_measurement_columns
from fleetcore.columnar import MeasurementColumns
from fleetcore.json_columns import chunk_body, clean_measurement_columns, item_spans
from fleetcore.json_text_time import text_time_columns
from fleetcore.limits import MAX_BATCH_ROWS
from hypothesis import given, settings
from hypothesis import strategies as st
from ingestd import _rowscan
from ingestd.decoding import _measurement_columns
from ingestd.rowscan import items_span, scan_clean, scan_columns

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
WIDE = ValidationWindow(NOW, timedelta(days=739_000), timedelta(days=2_900_000))
NARROW = ValidationWindow(NOW, timedelta(days=3650), timedelta(days=1))


def _same(a: MeasurementColumns | None, b: MeasurementColumns | None) -> None:
    """Equal columns: rows, names, nulls and every value's bits (-0.0 is not 0.0)."""
    assert (a is None) == (b is None)
    if a is None or b is None:
        return
    assert a.rows == b.rows and list(a.columns) == list(b.columns)
    for name, column in a.columns.items():
        other = b.columns[name]
        assert column.values.dtype == other.values.dtype, name
        assert column.values.view(np.int64).tolist() == other.values.view(np.int64).tolist(), name
        assert column.null_mask().tolist() == other.null_mask().tolist(), name


def _scanned(body: bytes) -> MeasurementColumns | None:
    span = items_span(body)
    assert span is not None
    return scan_columns(body, span)


def _item(i: int, **values: Any) -> dict[str, Any]:
    when = NOW - timedelta(minutes=i // 3)
    item: dict[str, Any] = {
        "time": when.isoformat().replace("+00:00", "Z"),
        "device_id": i % 3 + 1,
        "received_at": (when + timedelta(seconds=2, microseconds=i)).isoformat(),
    }
    item.update(values)
    return item


def _body(items: list[dict[str, Any]]) -> bytes:
    return msgspec.json.encode({"items": items})


value_texts = st.one_of(
    st.floats(min_value=-1e15, max_value=1e15, allow_nan=False).map(repr),
    st.integers(-(10**15), 10**15).map(str),
    st.integers(-(10**9), 10**9).map(lambda k: f"{k / 1000}"),
    st.tuples(st.integers(-(10**17), 10**17), st.integers(-340, 30)).map(
        lambda p: f"{p[0]}e{p[1]}"
    ),
    st.tuples(
        st.integers(0, 10**6),
        st.integers(0, 10**6),
        st.sampled_from("eE"),
        st.sampled_from(["", "+", "-"]),
        st.integers(0, 25),
    ).map(lambda p: f"{p[0]}.{p[1]}{p[2]}{p[3]}{p[4]}"),
    st.sampled_from(
        [
            "-0",
            "-0.0",
            "0",
            "0.0",
            "-0e5",
            "1E2",
            "5e-324",
            "-5e-324",
            "1e-400",
            "-1e-400",
            "2.2250738585072014e-308",
            "9007199254740993",
            "9007199254740992.5",
            "0.30000000000000004",
            "123456789012345678901234567890",
            "1e15",
            "1.0000000000000001e15",
            "1e400",
            "null",
        ]
    ),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(value_texts, min_size=1, max_size=24), min_size=1, max_size=30))
def test_values_are_the_doubles_msgspec_makes(rows: list[list[str]]) -> None:
    """Number texts of every form JSON allows (exponents, 17 digits, subnormals, -0, integers,
    out of range): the scanner's columns are msgspec's, bit for bit, or both take none of it."""
    items = []
    for i, texts in enumerate(rows):
        head = _body([_item(i)])[len(b'{"items":[') : -len(b"}]}")]
        fields = ",".join(
            f'"{name}":{text}' for name, text in zip(MEASUREMENT_VALUE_FIELDS, texts, strict=False)
        )
        items.append(head + b"," + fields.encode() + b"}")
    body = b'{"items":[' + b",".join(items) + b"]}"
    _same(_scanned(body), text_time_columns(body))


values = st.one_of(st.none(), st.floats(min_value=-1e15, max_value=1e15, allow_nan=False))


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.dictionaries(st.sampled_from(MEASUREMENT_VALUE_FIELDS), values), max_size=40),
    st.sampled_from(["time", "device", "scattered"]),
)
def test_a_pushers_body_is_taken_and_equal(rows: list[dict[str, Any]], order: str) -> None:
    """A pusher's form (keys in its order, any value left out or null; in time order, by meter or
    scattered): the scanner takes it and its columns are msgspec's."""
    items = []
    for i, given_values in enumerate(rows):
        ordered = {
            name: given_values[name] for name in MEASUREMENT_VALUE_FIELDS if name in given_values
        }
        items.append(_item(i, **ordered))
    if order == "device":
        items.sort(key=lambda item: item["device_id"])
    elif order == "scattered":
        random.Random(len(items)).shuffle(items)
    body = _body(items)
    scanned = _scanned(body)
    assert scanned is not None
    _same(scanned, text_time_columns(body))


def test_a_large_batch_is_equal_whole_and_chunk_by_chunk() -> None:
    """5,000 rows of 20 meters: whole, and each chunk of `item_spans` as the streamed path
    parses it."""
    rng = random.Random(7)
    items = [
        _item(
            i,
            **{
                name: round(rng.uniform(-1e4, 1e6), rng.randrange(5))
                for name in MEASUREMENT_VALUE_FIELDS
            },
        )
        for i in range(5000)
    ]
    body = _body(items)
    _same(_scanned(body), text_time_columns(body))
    spans = item_spans(body, 200_000, 1 << 20)
    assert spans is not None and len(spans) > 2
    for span in spans:
        chunk = clean_measurement_columns(chunk_body(body, span), WIDE)
        scanned = scan_clean(body, span, WIDE)
        assert chunk is not None and scanned is not None
        _same(scanned.valid, chunk.valid)
        assert (scanned.first_time, scanned.last_time) == (chunk.first_time, chunk.last_time)


GOOD = _body([_item(0, v1=230.1, i1=None), _item(1, v1=229.9, p1=1.5)])
REFUSED_FORMS = {
    "whitespace": GOOD.replace(b'"device_id":1', b'"device_id": 1'),
    "keys out of order": GOOD.replace(b'"v1":230.1,"i1":null', b'"i1":null,"v1":230.1'),
    "a key repeated": GOOD.replace(b'"v1":230.1', b'"v1":230.1,"v1":1.0'),
    "an unknown key": GOOD.replace(b'"v1":230.1', b'"v1":230.1,"colour":1'),
    "time not first": GOOD.replace(b'{"time":', b'{"device_id":1,"time":', 1),
    "an escape": GOOD.replace(b"Z", b"\\u005a", 1),
    "non-ASCII time": GOOD.replace(b"Z", "\uff3a".encode(), 1),  # a fullwidth Z
    "a control character": GOOD.replace(b"Z", b"\x01", 1),
    "a negative id": GOOD.replace(b'"device_id":1', b'"device_id":-1'),
    "-0 id": GOOD.replace(b'"device_id":1', b'"device_id":-0'),
    "a float id": GOOD.replace(b'"device_id":1', b'"device_id":1.0'),
    "an id past int64": GOOD.replace(b'"device_id":1', b'"device_id":9223372036854775808'),
    "an id with a leading zero": GOOD.replace(b'"device_id":1', b'"device_id":01'),
    "a string id": GOOD.replace(b'"device_id":1', b'"device_id":"1"'),
    "a leading zero": GOOD.replace(b"230.1", b"0230.1"),
    "a bare point": GOOD.replace(b"230.1", b"230."),
    "a point first": GOOD.replace(b"230.1", b".1"),
    "a plus sign": GOOD.replace(b"230.1", b"+230.1"),
    "NaN": GOOD.replace(b"230.1", b"NaN"),
    "Infinity": GOOD.replace(b"230.1", b"Infinity"),
    "true": GOOD.replace(b"230.1", b"true"),
    "a string value": GOOD.replace(b"230.1", b'"230.1"'),
    "nul": GOOD.replace(b"null", b"nul"),
    "a bare exponent": GOOD.replace(b"230.1", b"230e"),
    "a trailing comma": GOOD.replace(b"}]}", b"},]}"),
    "an item unclosed": GOOD.replace(b"}]}", b"]}"),
    "an empty item": GOOD.replace(b"]}", b",{}]}"),
    "a long number": GOOD.replace(b"230.1", b"230." + b"1" * 80),
    # msgspec reads these as 0.0 (an exponent of 100000 and more), the true values are 1.0 and
    # infinity: left to msgspec's way, as any number of 64 characters or more
    "zeros then a large exponent": GOOD.replace(b"230.1", b"0." + b"0" * 99_999 + b"1e100000"),
    "an exponent past 100000": GOOD.replace(b"230.1", b"0." + b"0" * 100_004 + b"15e1000005"),
    "a time with a brace": GOOD.replace(b"Z", b"{", 1),
    "an hour past 23": GOOD.replace(b"T", b"T9", 1),
    "out of bounds": GOOD.replace(b"230.1", b"1e16"),
}


@pytest.mark.parametrize("name", sorted(REFUSED_FORMS))
def test_other_forms_are_left_to_msgspec_and_answered_as_before(name: str) -> None:
    """The scanner takes none of these; the decoding path's answer for each is fleetcore's
    (columns, refusals with their reasons, or the same error)."""
    body = REFUSED_FORMS[name]
    assert body != GOOD
    assert _scanned(body) is None
    try:
        want = parse_measurement_columns(body, WIDE)
    except Exception as exc:  # the same error both ways
        with pytest.raises(type(exc)):
            _measurement_columns(bytearray(body), WIDE)
        return
    got = _measurement_columns(bytearray(body), WIDE)
    _same(got.valid, want.valid)
    assert [(r.index, r.reason) for r in got.rejections] == [
        (r.index, r.reason) for r in want.rejections
    ]


def test_a_window_and_the_bounds_are_checked() -> None:
    """A time outside the window: `scan_clean` leaves the body to the way that refuses the row."""
    old = _body([_item(0, v1=1.0) | {"time": "2000-01-01T00:00:00Z"}])
    span = items_span(old)
    assert span is not None
    assert scan_columns(old, span) is not None
    assert scan_clean(old, span, NARROW) is None
    parsed = _measurement_columns(bytearray(old), NARROW)
    assert parsed.valid.rows == 0 and len(parsed.rejections) == 1


def test_no_items_no_columns() -> None:
    body = b'{"items":[]}'
    assert _scanned(body) == MeasurementColumns(0, {})
    clean = scan_clean(body, (10, 10), WIDE)
    assert clean is not None and clean.valid.rows == 0


def test_more_rows_than_a_batch_may_carry_are_left_to_the_refusing_way() -> None:
    item = _body([_item(0)])[len(b'{"items":[') : -len(b"]}")]
    body = b'{"items":[' + b",".join([item] * (MAX_BATCH_ROWS + 1)) + b"]}"
    assert _scanned(body) is None


def test_buffers_too_small_or_a_span_outside_are_errors_not_writes() -> None:
    """The module's own checks: a caller's mistake raises, nothing is written past a buffer."""
    body = GOOD
    keys = tuple(name.encode() for name in MEASUREMENT_VALUE_FIELDS)
    cap = 2
    small = np.empty(3, np.float64)
    ids, lengths = np.empty(cap, np.int64), np.empty(cap, np.int64)
    texts = np.zeros((cap, 33), np.uint8)
    with pytest.raises(ValueError, match="values"):
        _rowscan.scan(
            body, 10, len(body) - 2, cap, keys, small, ids, texts, lengths, texts, lengths
        )
    with pytest.raises(ValueError, match="span"):
        _rowscan.count_items(body, 0, len(body) + 1)
    with pytest.raises(ValueError, match="cap"):  # its buffers' sizes would overflow
        _rowscan.scan(body, 10, 20, 2**62, keys, small, ids, texts, lengths, texts, lengths)
    values = np.empty((len(keys), 1), np.float64)  # room for one row: the second is refused
    one = (np.empty(1, np.int64), np.zeros((1, 33), np.uint8), np.empty(1, np.int64))
    got = _rowscan.scan(
        body, 10, len(body) - 2, 1, keys, values, one[0], one[1], one[2], one[1], one[2]
    )
    assert got is None


@settings(max_examples=400, deadline=None)
@given(st.data())
def test_any_damage_to_a_body_is_taken_alike_or_left(data: st.DataObject) -> None:
    """Bytes of a pusher's body replaced, dropped or inserted at random: the scanner never
    crashes, and whatever it takes, msgspec's way takes the same."""
    body = bytearray(GOOD)
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(10, len(body) - 3))
        byte = data.draw(st.sampled_from(b'0123456789.eE+-,:{}"n \\Z\x00\xff'))
        action = data.draw(st.sampled_from(["replace", "drop", "insert"]))
        if action == "replace":
            body[at] = byte
        elif action == "drop":
            del body[at]
        else:
            body.insert(at, byte)
    damaged = bytes(body)
    span = items_span(damaged)
    if span is None:
        return
    scanned = scan_columns(damaged, span)
    if scanned is not None:
        _same(scanned, text_time_columns(damaged))
