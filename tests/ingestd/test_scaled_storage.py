"""Scaled-integer storage: every value read back is the double that was sent, bit for bit.

Each value is stored as its integer steps at the field's resolution when it is exactly a whole
number of them, and as the double itself otherwise (`ingestd.storage.layout`). Every test runs
on both storage paths (plain PostgreSQL, TimescaleDB — skipped, saying so, where it is not
installed), through real HTTP, in both wire encodings and through both write paths (a small
batch by `unnest`, a large one by binary COPY).
"""

from __future__ import annotations

import math
import struct
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import psycopg
import pytest
from fleetcore import MEASUREMENT_VALUE_FIELDS, columns_from_rows, encode_columns, zstd_compress
from fleetcore.protocol import COLUMNAR_MEDIA_TYPE
from fleetcore.resolution import RESOLUTIONS, scaled_or_none
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ingestd.storage.layout import split_column

from tests.fix_ingestd import PostBatch, ThreadedIngestd
from tests.samples import NOW, measurement

COLUMNAR = {"Content-Type": COLUMNAR_MEDIA_TYPE, "Content-Encoding": "zstd"}
READ_BACK = (
    "SELECT device_id, time, "
    + ", ".join(f"float8send({n})" for n in MEASUREMENT_VALUE_FIELDS)
    + " FROM fleet.power_measurements WHERE customer_id = (SELECT id FROM fleet.customers "
    "WHERE code = %s) ORDER BY device_id, time"
)


@pytest.fixture
def central_db(storage_db: str) -> str:
    """Every test here on both storage paths."""
    return storage_db


def _bits(value: float | None) -> bytes | None:
    return None if value is None else struct.pack(">d", value)


def _sent(items: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    ordered = sorted(items, key=lambda i: (i["device_id"], i["time"]))
    return [
        (i["device_id"], i["time"], *(_bits(i.get(n)) for n in MEASUREMENT_VALUE_FIELDS))
        for i in ordered
    ]


def _read_back(dsn: str, code: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        return [
            (r[0], r[1], *(None if v is None else bytes(v) for v in r[2:]))
            for r in conn.execute(READ_BACK, (code,)).fetchall()
        ]


def _items(rows: list[list[float | None]], base: datetime, device: int) -> list[dict[str, Any]]:
    items = []
    for n, values in enumerate(rows):
        item: dict[str, Any] = {
            "device_id": device,
            "time": base + timedelta(minutes=n),
            "received_at": base + timedelta(minutes=n, seconds=2),
        }
        item.update(zip(MEASUREMENT_VALUE_FIELDS, values, strict=True))
        items.append(item)
    return items


def _as_json(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {k: v.isoformat() if isinstance(v, datetime) else v for k, v in i.items()} for i in items
    ]


def _ulp_neighbours(value: float) -> list[float]:
    return [math.nextafter(value, -math.inf), value, math.nextafter(value, math.inf)]


# Decimals at each field's resolution and at finer ones, one ulp either side of a decimal,
# -0.0, subnormals, the protocol's ±1e15 extremes and the integer columns' edges.
_EDGES = sorted(
    {
        *(x for v in (230.4, 0.001, 49.99, 1234567.8, 0.1, 2147483.647) for x in _ulp_neighbours(v)),
        -0.0, 0.0, 5e-324, -5e-324, 2.2250738585072014e-308, 1e15, -1e15, 999999999999999.9,
        214748364.7, 214748364.8, -214748364.8, 900719925474099.2, 12.345678,
    }
)  # fmt: skip
value_strategy = st.one_of(
    st.none(),
    st.floats(-1e15, 1e15, allow_subnormal=True),
    st.sampled_from(_EDGES),
    st.integers(-(10**10), 10**10).map(lambda k: k / 10.0),
    st.integers(-(10**9), 10**9).map(lambda k: k / 1000.0),
    st.integers(-(10**9), 10**9).map(lambda k: k / 100.0),
)
rows_strategy = st.lists(
    st.lists(
        value_strategy,
        min_size=len(MEASUREMENT_VALUE_FIELDS),
        max_size=len(MEASUREMENT_VALUE_FIELDS),
    ),
    min_size=1,
    max_size=12,
)


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(rows=rows_strategy, large=st.booleans())
def test_every_value_reads_back_bit_identical(
    threaded_ingestd: ThreadedIngestd,
    customer_token: str,
    other_token: str,
    central_db: str,
    rows: list[list[float | None]],
    large: bool,
) -> None:
    """Random values (whole steps, finer decimals, one ulp off a decimal, -0.0, subnormals,
    ±1e15, nulls) sent as gzip JSON and as zstd columnar, in small batches and in large ones
    (the COPY path), read back through `fleet.power_measurements` as exactly the doubles sent."""
    with psycopg.connect(central_db, autocommit=True) as conn:
        conn.execute("TRUNCATE fleet.power_measurements_scaled")
    base = datetime.now(UTC).replace(microsecond=0) - timedelta(days=2)
    if large:  # past SMALL_BATCH_ROWS: the COPY path
        rows = (rows * (250 // len(rows) + 1))[:250]
    items = _items(rows, base, device=7)
    status_json, answer_json = threaded_ingestd.post(
        customer_token, "measurements", _as_json(items)
    )
    body = zstd_compress(encode_columns(columns_from_rows(items)))
    status_col, answer_col = threaded_ingestd.post_body(other_token, "measurements", body, COLUMNAR)
    assert (status_json, status_col) == (200, 200)
    assert answer_json["accepted"] == answer_col["accepted"] == len(items)
    sent = _sent(items)
    assert _read_back(central_db, "DEV0001") == sent
    assert _read_back(central_db, "DEV0002") == sent


STORED_SPLIT = """
SELECT {scaled}, {exact} FROM fleet.power_measurements_scaled
WHERE device_id = %s ORDER BY time
"""


async def test_whole_steps_are_stored_as_integers_and_finer_values_as_sent(
    post_batch: PostBatch, customer_token: str, central_db: str
) -> None:
    """A value at its field's resolution is stored as its integer steps (the float column left
    null); a finer one, or -0.0, is stored as sent (the integer column left null)."""
    whole = {f: 12.5 if f != "pf_total" else 0.95 for f in MEASUREMENT_VALUE_FIELDS}
    finer = {f: 12.34567 for f in MEASUREMENT_VALUE_FIELDS}
    resp = await post_batch(
        customer_token,
        "measurements",
        [
            measurement(3, NOW - timedelta(minutes=3), **whole),
            measurement(3, NOW - timedelta(minutes=2), **finer),
            measurement(3, NOW - timedelta(minutes=1), v1=-0.0, i1=None),
        ],
    )
    assert resp.status == 200
    scaled = ", ".join(f"{f}_scaled" for f in MEASUREMENT_VALUE_FIELDS)
    exact = ", ".join(MEASUREMENT_VALUE_FIELDS)
    with psycopg.connect(central_db) as conn:
        stored = conn.execute(STORED_SPLIT.format(scaled=scaled, exact=exact), (3,)).fetchall()
    n = len(MEASUREMENT_VALUE_FIELDS)
    expected_steps = [
        round(whole[f] * 10 ** RESOLUTIONS[f].decimals) for f in MEASUREMENT_VALUE_FIELDS
    ]
    assert list(stored[0][:n]) == expected_steps
    assert list(stored[0][n:]) == [None] * n
    assert list(stored[1][:n]) == [None] * n
    assert list(stored[1][n:]) == [12.34567] * n
    v1, i1 = MEASUREMENT_VALUE_FIELDS.index("v1"), MEASUREMENT_VALUE_FIELDS.index("i1")
    assert stored[2][v1] is None and math.copysign(1.0, stored[2][n + v1]) == -1.0
    assert stored[2][i1] is None and stored[2][n + i1] is None


def test_sql_inserts_into_the_view_are_split_the_same_way(central_db: str) -> None:
    """An INSERT into `fleet.power_measurements` (operators, scripts) stores whole steps as
    integers and other values as sent, and reads back the same doubles."""
    values = {"v1": 230.4, "i1": 0.0015, "energy_imp_kwh": 123456789.1, "thd_v": -0.0}
    with psycopg.connect(central_db, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO fleet.power_measurements (time, customer_id, device_id, received_at, "
            "v1, i1, energy_imp_kwh, thd_v) VALUES (%s, 1, 5, %s, %s, %s, %s, %s)",
            (NOW, NOW, *values.values()),
        )
        split = conn.execute(
            "SELECT v1_scaled, v1, i1_scaled, i1, energy_imp_kwh_scaled, energy_imp_kwh, "
            "thd_v_scaled, float8send(thd_v) FROM fleet.power_measurements_scaled"
        ).fetchone()
        read = conn.execute(
            "SELECT float8send(v1), float8send(i1), float8send(energy_imp_kwh), float8send(thd_v) "
            "FROM fleet.power_measurements"
        ).fetchone()
    assert split == (2304, None, None, 0.0015, 1234567891, None, None, struct.pack(">d", -0.0))
    assert read is not None
    assert [bytes(b) for b in read] == [struct.pack(">d", v) for v in values.values()]


@given(
    st.lists(
        st.one_of(
            st.floats(-1e15, 1e15, allow_subnormal=True),
            st.integers(-(10**10), 10**10).map(lambda k: k / 1000.0),
            st.sampled_from([-0.0, 0.0, 5e-324, 2147483.647, 2147483.648]),
        ),
        min_size=1,
        max_size=50,
    ),
    st.sampled_from(MEASUREMENT_VALUE_FIELDS),
)
def test_the_storage_split_agrees_with_the_reference(values: list[float], field: str) -> None:
    """ingestd's vectorised split stores as integers exactly the values the one-by-one reference
    calls whole steps, with the same integers, and keeps every other value as sent."""
    resolution = RESOLUTIONS[field]
    split = split_column(np.array(values, np.float64), None, resolution)
    for i, value in enumerate(values):
        expected = scaled_or_none(value, resolution)
        assert (None if split.scaled_nulls[i] else int(split.scaled[i])) == expected
        assert bool(split.exact_nulls[i]) == (expected is not None)


def _compress_all(dsn: str) -> bool:
    """Compress every chunk, as the policy does (TimescaleDB); False on plain PostgreSQL."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'").fetchone():
            return False
        conn.execute(
            "SELECT compress_chunk(c, if_not_compressed => true) "
            "FROM show_chunks('fleet.power_measurements_scaled') c"
        )
    return True


def _hour_figures(dsn: str, hour: datetime) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            """SELECT h.device_id, h.samples, e.energy_imp_kwh
               FROM fleet.hourly_per_device h
               CROSS JOIN LATERAL fleet.hourly_energy(h.customer_id, h.device_id, %s, %s) e
               WHERE h.bucket = %s ORDER BY h.device_id""",
            (hour, hour + timedelta(hours=1), hour),
        ).fetchall()


def _register_rows(devices: range, minutes: list[int], hour: datetime) -> list[dict[str, Any]]:
    return [
        measurement(d, hour + timedelta(minutes=m), energy_imp_kwh=1000.0 + 0.5 * m, p_total=30.0)
        for d in devices
        for m in minutes
    ]


async def test_90_day_backfill_into_a_compressed_chunk_is_exactly_once_and_aggregated(
    post_batch: PostBatch, customer_token: str, central_db: str, ingestd_settings: Any
) -> None:
    """Samples of an hour 90 days old, aggregated and (TimescaleDB) compressed, then back-filled
    with the hour's missing samples plus re-sent ones — by small batch and by COPY: each new key
    is stored once, every re-sent one counted a duplicate, and after one housekeeping cycle the
    hourly row and the hour's energy are those of the complete hour."""
    from tests.ingestd.test_storage import _cycle

    hour = (NOW - timedelta(days=90)).replace(minute=0, second=0, microsecond=0)
    devices = range(1, 4)
    first = _register_rows(devices, list(range(20, 120, 2)), hour)
    resp = await post_batch(customer_token, "measurements", first)
    assert (await resp.json())["accepted"] == len(first) == 150
    await _cycle(ingestd_settings)
    assert _hour_figures(central_db, hour) == [(d, 20, 20.0) for d in devices]
    compressed = _compress_all(central_db)

    missing = [*range(20), *range(21, 120, 2)]
    small = _register_rows(range(1, 2), [*missing, *range(20, 40, 2)], hour)
    large = _register_rows(range(2, 4), [*missing, *range(20, 40, 2)], hour)
    for batch in (small, large):  # 80 rows: unnest; 160 + re-sent: the COPY path
        resp = await post_batch(customer_token, "measurements", batch)
        assert resp.status == 200
        assert (await resp.json())["accepted"] == len(missing) * (len(batch) // 80)
        assert (await resp.json())["duplicates"] == 10 * (len(batch) // 80)
        again = await post_batch(customer_token, "measurements", batch)
        assert ((await again.json())["accepted"], (await again.json())["duplicates"]) == (
            0,
            len(batch),
        )
    await _cycle(ingestd_settings)
    assert _hour_figures(central_db, hour) == [(d, 60, 30.0) for d in devices]
    with psycopg.connect(central_db) as conn:
        keys = conn.execute(
            "SELECT count(*), count(DISTINCT (device_id, time)) FROM fleet.power_measurements"
        ).fetchone()
        if compressed:
            chunks = conn.execute(
                """SELECT count(*) FROM timescaledb_information.chunks
                   WHERE hypertable_name = 'power_measurements_scaled'
                     AND range_start <= %s AND range_end > %s""",
                (hour, hour),
            ).fetchone()
            assert chunks == (1,)
    assert keys == (360, 360)
