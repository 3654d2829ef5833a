"""Measurement batches: idempotent storage, per-row rejection, audit trail."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import psycopg

from tests.fix_ingestd import PostBatch
from tests.samples import NOW, measurement, measurements


def _count(dsn: str, sql: str, *params: Any) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(sql, params).fetchone()
        assert row is not None
        return int(row[0])


async def test_batch_is_stored_and_counted(
    post_batch: PostBatch, customer_token: str, central_db: str
) -> None:
    """A valid batch is stored in full and the response counts every row as accepted."""
    resp = await post_batch(customer_token, "measurements", measurements(500))
    assert resp.status == 200
    body = await resp.json()
    assert (body["accepted"], body["duplicates"], body["rejected"], body["errors"]) == (
        500,
        0,
        0,
        [],
    )
    assert _count(central_db, "SELECT count(*) FROM fleet.power_measurements") == 500


async def test_redelivery_changes_nothing(
    post_batch: PostBatch, customer_token: str, central_db: str
) -> None:
    """Sending the same batch twice stores each sample once and reports the second as duplicates."""
    rows = measurements(200)
    first = await (await post_batch(customer_token, "measurements", rows)).json()
    second = await (await post_batch(customer_token, "measurements", rows)).json()
    assert (first["accepted"], first["duplicates"]) == (200, 0)
    assert (second["accepted"], second["duplicates"]) == (0, 200)
    assert _count(central_db, "SELECT count(*) FROM fleet.power_measurements") == 200


async def test_partial_overlap_inserts_only_new_keys(
    post_batch: PostBatch, customer_token: str, central_db: str
) -> None:
    """A batch overlapping an earlier one (its middle was stored) inserts only the new samples."""
    rows = measurements(300)
    await post_batch(customer_token, "measurements", rows[100:200])
    body = await (await post_batch(customer_token, "measurements", rows)).json()
    assert (body["accepted"], body["duplicates"]) == (200, 100)
    assert _count(central_db, "SELECT count(*) FROM fleet.power_measurements") == 300


async def test_duplicate_keys_inside_one_batch(
    post_batch: PostBatch, customer_token: str, central_db: str
) -> None:
    """Two samples with the same (time, device) in one batch: the first wins, the second is a duplicate."""
    when = NOW - timedelta(hours=1)
    rows = [
        measurement(1, when, p_total=1.0),
        measurement(1, when, p_total=2.0),
        measurement(2, when),
    ]
    body = await (await post_batch(customer_token, "measurements", rows)).json()
    assert (body["accepted"], body["duplicates"]) == (2, 1)
    with psycopg.connect(central_db) as conn:
        row = conn.execute(
            "SELECT p_total FROM fleet.power_measurements WHERE device_id = 1"
        ).fetchone()
    assert row == (1.0,)


async def test_mixed_batch_stores_good_rows_and_dead_letters_bad(
    post_batch: PostBatch, customer_token: str, central_db: str
) -> None:
    """Bad rows are rejected alone, kept with their reason; the good rows of the batch are stored."""
    rows = measurements(10)
    rows[2]["v1"] = "230"  # wrong type
    rows[4]["time"] = "yesterday"  # unparsable time
    rows[5]["time"] = (NOW + timedelta(days=3)).isoformat()  # too far ahead
    rows[6]["p_total"] = 1e300  # overflowing magnitude
    del rows[7]["device_id"]  # missing id
    rows[8]["device_id"] = 2**63  # outside bigint
    resp = await post_batch(customer_token, "measurements", rows)
    assert resp.status == 200
    body = await resp.json()
    assert (body["accepted"], body["rejected"]) == (4, 6)
    assert [e["index"] for e in body["errors"]] == [2, 4, 5, 6, 7, 8]
    assert "v1" in body["errors"][0]["reason"]
    assert _count(central_db, "SELECT count(*) FROM fleet.power_measurements") == 4
    with psycopg.connect(central_db) as conn:
        dead = conn.execute(
            "SELECT row_index, reason, payload, batch_id::text FROM fleet.rejected_rows ORDER BY row_index"
        ).fetchall()
    assert [d[0] for d in dead] == [2, 4, 5, 6, 7, 8]
    assert '"v1":"230"' in dead[0][2]
    assert all(d[3] == body["batch_id"] for d in dead)


async def test_non_finite_literal_is_rejected_per_row(
    post_batch: PostBatch, customer_token: str, central_db: str
) -> None:
    """A number that overflows a double (1e999) rejects its row, not the batch."""
    good = measurement(1, NOW - timedelta(minutes=5))
    raw = b'{"items": [%s, {"device_id": 2, "time": "2026-01-01T00:00:00Z", "received_at": "2026-01-01T00:00:00Z", "v1": 1e999}]}'
    import msgspec

    body = raw % msgspec.json.encode(good)
    resp = await post_batch(customer_token, "measurements", body=body, gzip=False)
    data = await resp.json()
    assert resp.status == 200
    assert (data["accepted"], data["rejected"]) == (1, 1)
    assert (
        _count(
            central_db, "SELECT count(*) FROM fleet.rejected_rows WHERE payload LIKE %s", "%1e999%"
        )
        == 1
    )


async def test_audit_row_and_customer_seen(
    post_batch: PostBatch, customer_token: str, central_db: str
) -> None:
    """Each batch leaves one audit row with its counts, sizes, cursor and time spread; the customer is marked seen."""
    rows = measurements(50, devices=5)
    resp = await post_batch(
        customer_token,
        "measurements",
        rows,
        headers={"X-Push-Cursor": "42:7:2026-01-01T00:00:00+00:00"},
    )
    assert resp.status == 200
    with psycopg.connect(central_db) as conn:
        event = conn.execute(
            """SELECT batch_type, accepted, duplicates, rejected, wire_bytes, body_bytes, client_cursor,
                      max_time - min_time, outcome, status FROM fleet.ingest_events"""
        ).fetchall()
        seen = conn.execute(
            "SELECT first_seen_at IS NOT NULL, last_seen_at IS NOT NULL FROM fleet.customers WHERE code = 'DEV0001'"
        ).fetchone()
    assert len(event) == 1
    batch_type, accepted, dup, rej, wire, plain, cursor, spread, outcome, status = event[0]
    assert (batch_type, accepted, dup, rej, outcome, status) == (
        "measurements",
        50,
        0,
        0,
        "ok",
        200,
    )
    assert 0 < wire < plain
    assert cursor == "42:7:2026-01-01T00:00:00+00:00"
    assert spread == timedelta(minutes=9)
    assert seen == (True, True)


async def test_customer_comes_from_token_not_body(
    post_batch: PostBatch, customer_token: str, other_token: str, central_db: str
) -> None:
    """Rows are stored under the token's customer whatever the body claims; two customers may share device ids."""
    rows = [dict(r, customer_id=2, customer="DEV0002") for r in measurements(20)]
    assert (await post_batch(customer_token, "measurements", rows)).status == 200
    assert (await post_batch(other_token, "measurements", measurements(20))).status == 200
    with psycopg.connect(central_db) as conn:
        per_customer = conn.execute(
            """SELECT c.code, count(*) FROM fleet.power_measurements m JOIN fleet.customers c ON c.id = m.customer_id
               GROUP BY c.code ORDER BY c.code"""
        ).fetchall()
    assert per_customer == [("DEV0001", 20), ("DEV0002", 20)]
