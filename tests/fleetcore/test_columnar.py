"""The columnar encoding: lossless round trips, hostile bodies, and the JSON path's validation."""

from __future__ import annotations

import contextlib
import math
import struct
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import numpy as np
import pytest
from fleetcore import (
    MEASUREMENT_VALUE_FIELDS,
    BatchFormatError,
    BatchType,
    Column,
    DecompressedTooLarge,
    InvalidCompressedBody,
    MeasurementColumns,
    ValidationWindow,
    columns_from_rows,
    decode_columns,
    encode_columns,
    parse_batch,
    parse_columnar_batch,
    zstd_compress,
    zstd_decompress,
)
from fleetcore.columnar import COLUMN_NAMES
from fleetcore.limits import MAX_BATCH_ROWS
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
KEYS = ("time", "device_id", "received_at")
WINDOW = ValidationWindow(NOW, timedelta(days=365), timedelta(days=1))
EXTREMES = [0.0, -0.0, 5e-324, -5e-324, 2.2250738585072014e-308, 1e308, -1e308, 1e15, -1e15]

int64s = st.integers(-(2**63), 2**63 - 1)
# Decimal readings as meters report them, and any float64 at all (NaN, infinities included).
decimals = st.builds(
    lambda k, scale: k / 10**scale, st.integers(-(10**12), 10**12), st.integers(0, 6)
)
any_floats = st.floats(allow_nan=True, allow_infinity=True, allow_subnormal=True)
values = st.one_of(st.none(), decimals, any_floats, st.sampled_from(EXTREMES))


@st.composite
def batches(draw: st.DrawFn, max_rows: int = 40) -> MeasurementColumns:
    rows = draw(st.integers(0, max_rows))
    columns: dict[str, Column] = {}
    for name in KEYS:
        ints = draw(st.lists(int64s, min_size=rows, max_size=rows))
        nulls = draw(st.lists(st.booleans(), min_size=rows, max_size=rows))
        columns[name] = Column(
            np.array(ints, np.int64), np.array(nulls, np.bool_) if any(nulls) else None
        )
    for name in draw(st.lists(st.sampled_from(MEASUREMENT_VALUE_FIELDS), max_size=6)):
        cells = draw(st.lists(values, min_size=rows, max_size=rows))
        nulls = [c is None for c in cells]
        floats = np.array([0.0 if c is None else c for c in cells], np.float64)
        columns[name] = Column(floats, np.array(nulls, np.bool_) if any(nulls) else None)
    return MeasurementColumns(rows, columns)


def bits(column: Column) -> tuple[list[int], list[bool]]:
    """A column as bit patterns where not null, and its null flags (what must survive)."""
    nulls = column.null_mask()
    patterns = column.values.view(np.int64)
    return [int(p) if not n else 0 for p, n in zip(patterns, nulls, strict=True)], nulls.tolist()


def assert_same(sent: MeasurementColumns, received: MeasurementColumns) -> None:
    assert received.rows == sent.rows
    for name, column in sent.columns.items():
        if column.nulls is not None and column.nulls.all() and sent.rows and name not in KEYS:
            assert name not in received.columns
            continue
        assert bits(received.columns[name]) == bits(column), name
    assert set(received.columns) <= set(sent.columns)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches(max_rows=40))
def test_round_trip_is_bit_identical(batch: MeasurementColumns) -> None:
    """Any batch (extremes, NaN, ±0.0, subnormals, 1e308, nulls, full int64 keys) decodes to the
    very same bits, through zstd too, small (bit-packed) and large (byte-shuffled) alike."""
    body = encode_columns(batch)
    assert_same(batch, decode_columns(body))
    assert_same(batch, decode_columns(zstd_decompress(zstd_compress(body), 64 * 1024 * 1024)))


@pytest.mark.parametrize("seed", range(4))
def test_large_random_batches_round_trip(seed: int) -> None:
    """Batches past the bit-packing threshold (byte-shuffled) keep every bit too: random int64
    keys, random float64 bit patterns (NaN payloads included), decimals, extremes and nulls."""
    rng = np.random.default_rng(seed)
    rows = int(rng.integers(256, 3000))
    columns = {
        name: Column(rng.integers(-(2**63), 2**63 - 1, rows, dtype=np.int64, endpoint=True))
        for name in ("time", "device_id", "received_at")
    }
    columns["v1"] = Column(rng.integers(0, 2**64 - 1, rows, dtype=np.uint64).view(np.float64))
    columns["v2"] = Column(np.round(rng.normal(230, 2, rows), 1), rng.random(rows) < 0.1)
    extremes = rng.choice(np.array(EXTREMES), rows)
    columns["v3"] = Column(extremes, rng.random(rows) < 0.5)
    columns["freq"] = Column(np.round(rng.normal(50, 0.02, rows), 3))
    batch = MeasurementColumns(rows, columns)
    assert_same(batch, decode_columns(encode_columns(batch)))


@pytest.mark.parametrize("rows", [1, 255, 256, 5000])
def test_extremes_round_trip_in_both_layouts(rows: int) -> None:
    """-0.0, subnormals and 1e308 next to meter decimals keep their bits in both layouts."""
    cycle = [*EXTREMES, 230.4, 12.37, None]
    items = [
        {
            "time": NOW + timedelta(minutes=i),
            "device_id": i % 20,
            "received_at": NOW,
            "v1": cycle[i % len(cycle)],
            "v2": round(230 + (i % 7) / 10, 1),
            "energy_imp_kwh": 12345.6 + i / 10,
        }
        for i in range(rows)
    ]
    batch = columns_from_rows(items)
    assert_same(batch, decode_columns(encode_columns(batch)))


def meter_rows(count: int) -> list[dict[str, Any]]:
    rows = []
    for i in range(count):
        d = i % 20
        row: dict[str, Any] = {
            "time": NOW - timedelta(minutes=count // 20 - i // 20),
            "device_id": d + 1,
            "received_at": NOW,
        }
        for j, name in enumerate(MEASUREMENT_VALUE_FIELDS):
            row[name] = round(100 + d * 3.1 + j + (i * 7919 % 97) / 10, 1)
        rows.append(row)
    return rows


def test_meter_rows_take_a_fraction_of_json() -> None:
    """Meter decimals become small integers: far fewer bytes than the JSON of the same rows."""
    rows = meter_rows(2000)
    body = zstd_compress(encode_columns(columns_from_rows(rows)))
    as_json = msgspec.json.encode({"items": rows})
    assert len(body) * 8 < len(as_json)


# --- hostile bodies ---------------------------------------------------------------------------


def header(rows: int, columns: list[bytes]) -> bytes:
    return bytes((1,)) + bytes((rows,)) + bytes((len(columns),)) + b"".join(columns)


def key_columns(rows: int) -> tuple[list[bytes], bytes]:
    """time/device_id/received_at as 8-bit offsets from base 0, and their data."""
    heads = [bytes((cid, 0x20, 8, 0)) for cid in range(3)]
    return heads, bytes(range(rows)) * 3


def with_values(*columns: bytes, data: bytes = b"ab" * 2) -> bytes:
    """Two rows: the key columns, then `columns` (headers), then their `data`."""
    heads, keys = key_columns(2)
    return header(2, [*heads, *columns]) + keys + data


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (b"", "ends early"),
        (bytes((2, 0, 0)), "version 2"),
        (
            header(2, [*key_columns(2)[0], bytes((60, 0x40, 8, 0))]) + key_columns(2)[1] + b"ab",
            "unknown column id 60",
        ),
        (header(2, key_columns(2)[0]) + key_columns(2)[1][:-1], "ends early"),
        (header(2, key_columns(2)[0]) + key_columns(2)[1] + b"x", "after the last column"),
        (
            header(2, key_columns(2)[0][:2]) + key_columns(2)[1][:4],
            "key column received_at is missing",
        ),
        (
            header(2, [*key_columns(2)[0], key_columns(2)[0][0]]) + key_columns(2)[1] * 2,
            "appears twice",
        ),
        (
            header(2, [bytes((0, 0x40 | 0x20, 8, 0)), *key_columns(2)[0][1:]]) + key_columns(2)[1],
            "kind 1 is not allowed",
        ),
        (
            header(2, [*key_columns(2)[0], bytes((3, 0x00, 8, 0))]) + key_columns(2)[1] + b"ab",
            "kind 0 is not allowed",
        ),
        (
            header(2, [*key_columns(2)[0], bytes((3, 0x80, 8, 0))]) + key_columns(2)[1] + b"ab",
            "64 bits",
        ),
        (
            header(2, [*key_columns(2)[0], bytes((3, 0x40, 12, 0))]) + key_columns(2)[1] + b"ab",
            "width 12",
        ),
        (
            header(2, [*key_columns(2)[0], bytes((3, 0x60, 65, 0))]) + key_columns(2)[1] + b"ab",
            "width 65",
        ),
        (bytes((1, 0xFF, 0xFF, 0xFF, 0xFF, 0x0F, 0)), "row limit"),
        (bytes((1, 0x80, 0x80)), "ends early"),
        (bytes((1,)) + bytes((0xFF,)) * 11, "longer than 64 bits"),
        (with_values(bytes((3 | 0x40, 0x60, 8, 4, 0)), bytes((4, 0x60, 8, 0))), "not an earlier"),
        (with_values(bytes((3 | 0x40, 0x60, 8, 60, 0)), data=b"ab"), "unknown reference"),
        (
            with_values(bytes((3, 0x61, 8, 0)), bytes((4 | 0x40, 0x62, 8, 3, 0))),
            "another kind or scale",
        ),
        (
            with_values(
                bytes((3, 0x60, 8, 0)), bytes((4 | 0x40 | 0x80, 0x60, 8, 3, 0)), data=b"ab\x01a"
            ),
            "other nulls",
        ),
        (
            with_values(
                bytes((3, 0xA0, 64, 0)), bytes((4 | 0x40, 0x60, 8, 3, 0)), data=b"x" * 16 + b"ab"
            ),
            "no reference|not an earlier",
        ),
    ],
)
def test_malformed_bodies_are_format_errors(body: bytes, detail: str) -> None:
    """Each way a body can break the layout is a 4xx-class error that says what is wrong (a row
    count past the limit is `too_many_rows`, a 413; everything else `invalid_batch`, a 400)."""
    with pytest.raises(BatchFormatError, match=detail) as caught:
        decode_columns(body)
    assert caught.value.code == ("too_many_rows" if detail == "row limit" else "invalid_batch")


def test_zero_width_columns_cannot_claim_unbounded_rows() -> None:
    """Equal values take no bytes, so the row count itself is capped: no allocation from a claim."""
    rows = MAX_BATCH_ROWS + 1
    count = bytes((rows & 0x7F | 0x80, rows >> 7 & 0x7F | 0x80, rows >> 14))
    heads = [bytes((cid, 0x20, 0, 0)) for cid in range(3)]
    with pytest.raises(BatchFormatError, match="row limit") as caught:
        decode_columns(bytes((1,)) + count + bytes((3,)) + b"".join(heads))
    assert caught.value.code == "too_many_rows"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches(max_rows=12), st.data())
def test_damaged_bodies_never_fail_otherwise(
    batch: MeasurementColumns, data: st.DataObject
) -> None:
    """A valid body with bytes flipped, cut or added decodes or is a BatchFormatError, never
    another exception; whatever decodes is validated row by row without error either."""
    body = bytearray(encode_columns(batch))
    for _ in range(data.draw(st.integers(1, 4))):
        where = data.draw(st.integers(0, max(len(body) - 1, 0)))
        action = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        if action == "flip" and body:
            body[where] ^= data.draw(st.integers(1, 255))
        elif action == "cut":
            del body[where:]
        else:
            body[where:where] = data.draw(st.binary(min_size=1, max_size=9))
    try:
        parsed = parse_columnar_batch(bytes(body), WINDOW)
    except BatchFormatError:
        return
    assert parsed.total <= MAX_BATCH_ROWS


def _either_decoder(body: bytes, small_rows: int) -> tuple[str, Any]:
    try:
        batch = decode_columns(body, small_rows=small_rows)
    except BatchFormatError as exc:
        return "error", (exc.code, exc.detail)
    return "batch", (batch.rows, list(batch.columns), [bits(c) for c in batch.columns.values()])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches(max_rows=64), st.data())
def test_small_batch_decoder_matches_numpy(batch: MeasurementColumns, data: st.DataObject) -> None:
    """The small batches' decoder (Python ints) gives the numpy decoder's bits, nulls and
    column order, and the same error for the same damaged body."""
    body = bytearray(encode_columns(batch))
    if body and data.draw(st.booleans()):
        where = data.draw(st.integers(0, len(body) - 1))
        body[where] ^= data.draw(st.integers(1, 255))
    assert _either_decoder(bytes(body), small_rows=64) == _either_decoder(bytes(body), 0)


@pytest.mark.parametrize("rows", [1, 27, 64])
def test_small_batch_decoder_matches_numpy_on_meter_rows(rows: int) -> None:
    """On meter readings, whose related columns are sent as differences (references), the
    small batches' decoder gives the numpy decoder's bits."""
    body = encode_columns(columns_from_rows(meter_rows(rows)))
    assert _either_decoder(body, 64) == _either_decoder(body, 0)
    assert _either_decoder(body, 64)[0] == "batch"


@pytest.mark.parametrize(
    "body",
    [
        bytes((1, 0, 0)),  # no rows, no columns
        bytes((1, 1, 0)),  # a row, no columns: a key column is missing
        bytes((1, 0, 1, 0, 0x20, 0, 0)),  # no rows, a bit-packed time column of 0 bits
        bytes((1, 2, 3, 0, 0x20, 0, 0, 1, 0x20, 0, 0, 2, 0x20, 0, 0)),  # 2 rows of zeros
        bytes((1, 0, 1, 0, 0, 0, 0)),  # byte-shuffled of width 0: refused
    ],
)
def test_bodies_without_columns_decode_alike(body: bytes) -> None:
    """A body of no rows or no columns (or one column of no bits) decodes, or is refused, the
    same way by the small batches' decoder and the numpy one — never another exception."""
    assert _either_decoder(body, 64) == _either_decoder(body, 0)


@settings(max_examples=200, deadline=None)
@example(bytes((1, 0, 0)))
@given(st.binary(max_size=200))
def test_random_bytes_are_format_errors(body: bytes) -> None:
    """Arbitrary bytes never raise anything but BatchFormatError."""
    with contextlib.suppress(BatchFormatError):
        decode_columns(body)


# --- zstd -------------------------------------------------------------------------------------


def test_zstd_bomb_stops_at_the_limit() -> None:
    """50 MB of zeros in 1.5 KB of zstd: refused at the limit, not inflated."""
    bomb = zstd_compress(bytes(50_000_000))
    with pytest.raises(DecompressedTooLarge) as caught:
        zstd_decompress(bomb, 1_000_000)
    assert caught.value.max_bytes == 1_000_000


@pytest.mark.parametrize("claimed", [1, 2**40])
def test_lying_content_size_is_refused_without_allocating_it(claimed: int) -> None:
    """A frame whose header claims another content size (tiny or a terabyte) is an error."""
    frame = bytearray(zstd_compress(b"x" * 4000, level=1))
    descriptor = frame[4]
    # Single segment, 2-byte content size field (value - 256) right after the descriptor.
    assert descriptor & 0x20 and descriptor >> 6 == 1
    forged = bytes(frame[:4]) + bytes((descriptor & 0x3F | 0xC0,))
    forged += struct.pack("<Q", claimed) + bytes(frame[7:])
    with pytest.raises((InvalidCompressedBody, DecompressedTooLarge)):
        zstd_decompress(forged, 1_000_000)


def test_truncated_and_corrupt_zstd_are_refused() -> None:
    """A cut frame or a flipped byte is refused (content checksum), never a shorter body."""
    frame = zstd_compress(bytes(range(256)) * 400)
    with pytest.raises(InvalidCompressedBody, match="truncated"):
        zstd_decompress(frame[: len(frame) // 2], 10**7)
    corrupt = bytearray(frame)
    corrupt[len(corrupt) // 2] ^= 0xFF
    with pytest.raises(InvalidCompressedBody):
        zstd_decompress(bytes(corrupt), 10**7)
    with pytest.raises(InvalidCompressedBody):
        zstd_decompress(b"not zstd at all", 10**7)


def test_window_over_the_cap_is_refused() -> None:
    """A frame asking for a 128 MiB window is refused before the window is allocated."""
    from backports import zstd

    frame = zstd.compress(bytes(1000), options={zstd.CompressionParameter.window_log: 27})
    # Force the window descriptor: single-segment frames carry no window, so build a streamed one.
    compressor = zstd.ZstdCompressor(options={zstd.CompressionParameter.window_log: 27})
    streamed = compressor.compress(bytes(1000)) + compressor.flush()
    assert zstd_decompress(frame, 10**6) == bytes(1000)
    with pytest.raises(InvalidCompressedBody):
        zstd_decompress(streamed, 10**6)


# --- validation -------------------------------------------------------------------------------


row_values = st.one_of(
    st.none(), decimals, st.sampled_from([*EXTREMES, 1e16, -1e16, 2e15]), st.floats(-1e16, 1e16)
)


@st.composite
def json_rows(draw: st.DrawFn) -> list[dict[str, Any]]:
    rows = []
    for _ in range(draw(st.integers(1, 30))):
        row: dict[str, Any] = {
            "time": NOW + timedelta(seconds=draw(st.integers(-400 * 86400, 2 * 86400))),
            "device_id": draw(st.one_of(st.integers(0, 2**63 - 1), st.integers(-5, -1))),
            "received_at": NOW,
        }
        for name in draw(st.lists(st.sampled_from(MEASUREMENT_VALUE_FIELDS), max_size=5)):
            row[name] = draw(row_values)
        # Fields in column order, as the pusher writes them: with two bad values in a row, both
        # paths then name the same (first) one.
        rows.append({name: row[name] for name in COLUMN_NAMES if name in row})
    return rows


@settings(max_examples=100, deadline=None)
@given(json_rows())
def test_validation_matches_the_json_path(rows: list[dict[str, Any]]) -> None:
    """The same rows sent as JSON or columnar: same valid rows, same indexes, same reasons."""
    as_json = parse_batch(msgspec.json.encode({"items": rows}), BatchType.MEASUREMENTS, WINDOW)
    as_columns = parse_columnar_batch(encode_columns(columns_from_rows(rows)), WINDOW)
    assert as_columns.to_rows() == as_json.rows
    assert [(r.index, r.reason) for r in as_columns.rejections] == [
        (r.index, r.reason) for r in as_json.rejections
    ]
    assert (as_columns.first_time, as_columns.last_time) == (as_json.first_time, as_json.last_time)


def test_non_finite_values_are_rejected_alone_and_kept() -> None:
    """NaN and infinities (only a columnar body can carry them) are refused row by row, with the
    value spelled out in the dead-letter payload."""
    rows = meter_rows(3)
    rows[1]["v1"] = math.nan
    rows[2]["freq"] = -math.inf
    parsed = parse_columnar_batch(encode_columns(columns_from_rows(rows)), WINDOW)
    assert parsed.valid.rows == 1
    assert [r.index for r in parsed.rejections] == [1, 2]
    assert "finite" in parsed.rejections[0].reason and "`$.v1`" in parsed.rejections[0].reason
    assert msgspec.json.decode(parsed.rejections[1].payload)["freq"] == "-inf"


def test_null_keys_and_impossible_times_are_rejected_alone() -> None:
    """A row with no device or a time outside years 1-9999 is refused; its neighbours pass."""
    batch = columns_from_rows(meter_rows(3))
    device = batch.columns["device_id"]
    time = batch.columns["time"]
    patched = dict(batch.columns)
    patched["device_id"] = Column(device.values, np.array([False, True, False]))
    patched["time"] = Column(np.array([time.values[0], time.values[1], 2**62], np.int64))
    parsed = parse_columnar_batch(encode_columns(MeasurementColumns(3, patched)), WINDOW)
    assert parsed.valid.rows == 1
    assert [r.index for r in parsed.rejections] == [1, 2]
    assert "device_id" in parsed.rejections[0].reason
    assert "years 1-9999" in parsed.rejections[1].reason


def test_related_columns_are_sent_as_differences() -> None:
    """A phase current that follows another (same meters, same scale) costs only the difference,
    and comes back exact; with nulls in different rows it is sent on its own, still exact."""
    rng = np.random.default_rng(3)
    rows = 20
    keys = {
        "time": Column(np.full(rows, 1_795_737_600_000_000, np.int64)),
        "device_id": Column(np.arange(1, rows + 1, dtype=np.int64)),
        "received_at": Column(np.full(rows, 1_795_737_601_000_000, np.int64)),
    }
    i1 = np.round(rng.uniform(5, 90, rows), 3)
    i2 = np.round(i1 + rng.uniform(-0.05, 0.05, rows), 3)
    alone = len(encode_columns(MeasurementColumns(rows, {**keys, "i1": Column(i1)})))
    both = MeasurementColumns(rows, {**keys, "i1": Column(i1), "i2": Column(i2)})
    body = encode_columns(both)
    assert len(body) - alone < 20 * 8 / 8 + 8  # ≤ 7 bits per row (±50 steps) plus a header
    assert_same(both, decode_columns(body))
    holes = np.zeros(rows, np.bool_)
    holes[3] = True
    apart = MeasurementColumns(rows, {**keys, "i1": Column(i1), "i2": Column(i2, holes)})
    assert_same(apart, decode_columns(encode_columns(apart)))
