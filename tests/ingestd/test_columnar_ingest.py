"""The columnar encoding at ingestd: accepted beside JSON, stored bit for bit alike, refused safely."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import psycopg
from fleetcore import (
    MEASUREMENT_VALUE_FIELDS,
    columns_from_rows,
    encode_columns,
    zstd_compress,
)
from fleetcore.protocol import COLUMNAR_MEDIA_TYPE
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fix_ingestd import PostBatch, ThreadedIngestd
from tests.samples import NOW, measurements

COLUMNAR = {"Content-Type": COLUMNAR_MEDIA_TYPE, "Content-Encoding": "zstd"}
STORED = (
    "SELECT device_id, time, received_at, "
    + ", ".join(f"float8send({n})" for n in MEASUREMENT_VALUE_FIELDS)
    + " FROM fleet.power_measurements WHERE customer_id = (SELECT id FROM fleet.customers "
    "WHERE code = %s) ORDER BY device_id, time"
)


def as_rows(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Protocol items (ISO times) as rows with datetimes, for the columnar encoder."""
    out = []
    for item in items:
        row = dict(item)
        for key in ("time", "received_at"):
            row[key] = datetime.fromisoformat(row[key].replace("Z", "+00:00"))
        out.append(row)
    return out


def columnar(items: list[dict[str, Any]]) -> bytes:
    return zstd_compress(encode_columns(columns_from_rows(as_rows(items))))


def stored(dsn: str, code: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(STORED, (code,)).fetchall()


async def test_columnar_batch_is_stored_and_the_answer_advertises_it(
    post_batch: PostBatch, customer_token: str, central_db: str
) -> None:
    """A zstd columnar batch is stored like a JSON one, and every answer lists what is accepted."""
    items = measurements(500)
    resp = await post_batch(
        customer_token, "measurements", body=columnar(items), gzip=False, headers=COLUMNAR
    )
    assert resp.status == 200
    assert (await resp.json())["accepted"] == 500
    assert COLUMNAR_MEDIA_TYPE in resp.headers["Accept-Post"]
    assert "zstd" in resp.headers["Accept-Encoding"]
    again = await post_batch(
        customer_token, "measurements", body=columnar(items), gzip=False, headers=COLUMNAR
    )
    assert (await again.json())["duplicates"] == 500
    refused = await post_batch(None, "measurements", items)
    assert refused.status == 401 and "zstd" in refused.headers["Accept-Encoding"]


async def test_same_rows_stored_alike_whichever_encoding(
    post_batch: PostBatch, customer_token: str, other_token: str, central_db: str
) -> None:
    """The same rows (nulls in some rows, -0.0, subnormals, ±1e15) sent as JSON by one customer
    and as columnar by another are stored with identical bits."""
    items = measurements(300)
    extremes = [-0.0, 5e-324, 1e15, -1e15, 2.2250738585072014e-308, None, 0.1, 1 / 3]
    for i, item in enumerate(items):
        item["thd_i"] = extremes[i % len(extremes)]
        item["v2"] = None if i % 3 == 0 else item["v2"] + i / 1000
    item = items[7]
    for name in MEASUREMENT_VALUE_FIELDS[5:]:
        item[name] = None
    json_resp = await post_batch(customer_token, "measurements", items)
    col_resp = await post_batch(
        other_token, "measurements", body=columnar(items), gzip=False, headers=COLUMNAR
    )
    assert json_resp.status == col_resp.status == 200
    assert stored(central_db, "DEV0001") == stored(central_db, "DEV0002")
    assert len(stored(central_db, "DEV0002")) == 300


async def test_bad_rows_are_dead_lettered_with_their_index(
    post_batch: PostBatch, customer_token: str, central_db: str
) -> None:
    """Rows refused in a columnar batch get the same indexes and reasons in the answer and in
    fleet.rejected_rows; the rest is stored."""
    items = measurements(10)
    items[2]["p_total"] = 1e16
    items[5]["time"] = (NOW - timedelta(days=5000)).isoformat()
    items[7]["v1"] = math.nan
    resp = await post_batch(
        customer_token, "measurements", body=columnar(items), gzip=False, headers=COLUMNAR
    )
    body = await resp.json()
    assert (body["accepted"], body["rejected"]) == (7, 3)
    assert [e["index"] for e in body["errors"]] == [2, 5, 7]
    with psycopg.connect(central_db) as conn:
        dead = conn.execute(
            "SELECT row_index, reason, payload FROM fleet.rejected_rows ORDER BY row_index"
        ).fetchall()
    assert [d[0] for d in dead] == [2, 5, 7]
    assert "p_total" in dead[0][1] and "older than" in dead[1][1] and "finite" in dead[2][1]
    assert msgspec.json.decode(dead[2][2])["v1"] == "nan"


async def test_hostile_columnar_bodies_get_4xx(
    post_batch: PostBatch, customer_token: str, ingestd_settings: Any
) -> None:
    """A zstd bomb is 413; corrupt zstd 400 invalid_zstd; a broken layout 400 invalid_batch;
    columnar sites 415; nothing is stored and nothing answers 5xx."""
    bomb = zstd_compress(bytes(ingestd_settings.max_body_bytes + 1))
    cases = [
        ("measurements", bomb, COLUMNAR, 413, "payload_too_large"),
        ("measurements", b"\x28\xb5\x2f\xfd garbage", COLUMNAR, 400, "invalid_zstd"),
        ("measurements", zstd_compress(b"\x01\x05\x00"), COLUMNAR, 400, "invalid_batch"),
        (
            "measurements",
            b"\x02\x00\x00",
            {"Content-Type": COLUMNAR_MEDIA_TYPE},
            400,
            "invalid_batch",
        ),
        ("sites", zstd_compress(b"\x01\x00\x00"), COLUMNAR, 415, "unsupported_media_type"),
        (
            "measurements",
            b"x",
            {"Content-Type": COLUMNAR_MEDIA_TYPE, "Content-Encoding": "br"},
            415,
            "unsupported_media_type",
        ),
    ]
    for kind, body, headers, status, code in cases:
        resp = await post_batch(customer_token, kind, body=body, gzip=False, headers=headers)
        assert (resp.status, (await resp.json())["error"]) == (status, code), code


rows_strategy = st.lists(
    st.tuples(
        st.integers(0, 2**63 - 1),
        st.integers(-86400 * 300, 3600),
        st.lists(
            st.one_of(
                st.none(),
                st.floats(-1e15, 1e15, allow_subnormal=True),
                st.sampled_from([-0.0, 5e-324, 1e15, -1e15, 230.4, 0.001]),
            ),
            min_size=len(MEASUREMENT_VALUE_FIELDS),
            max_size=len(MEASUREMENT_VALUE_FIELDS),
        ),
    ),
    min_size=1,
    max_size=30,
    unique_by=lambda r: (r[0], r[1]),
)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(rows=rows_strategy)
def test_stored_bits_do_not_depend_on_the_encoding(
    threaded_ingestd: ThreadedIngestd,
    customer_token: str,
    other_token: str,
    central_db: str,
    rows: list[tuple[int, int, list[float | None]]],
) -> None:
    """Random rows (any finite value in range, -0.0, subnormals, nulls, any device id) sent over
    real HTTP as gzip JSON and as zstd columnar end up as the same bits in the central table."""
    with psycopg.connect(central_db, autocommit=True) as conn:
        conn.execute("TRUNCATE fleet.power_measurements_scaled")
    base = datetime.now(UTC).replace(microsecond=0)
    items = []
    for device, seconds, values in rows:
        item: dict[str, Any] = {
            "device_id": device,
            "time": (base + timedelta(seconds=seconds, microseconds=device % 999_999)).isoformat(),
            "received_at": base.isoformat(),
        }
        item.update(zip(MEASUREMENT_VALUE_FIELDS, values, strict=True))
        items.append(item)
    status_json, answer_json = threaded_ingestd.post(customer_token, "measurements", items)
    status_col, answer_col = threaded_ingestd.post_body(
        other_token, "measurements", columnar(items), COLUMNAR
    )
    assert status_json == status_col == 200
    assert answer_json["accepted"] == answer_col["accepted"] == len(items)
    assert stored(central_db, "DEV0001") == stored(central_db, "DEV0002")
