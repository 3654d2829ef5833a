"""Full-set batches of sites and devices: upsert, soft delete, undelete, isolation."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from tests.fix_ingestd import PostBatch
from tests.samples import device, encode, site


@pytest.fixture
def central_db(storage_db: str) -> str:
    """Full sets on both storage paths (plain PostgreSQL and TimescaleDB)."""
    return storage_db


def _rows(dsn: str, sql: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(sql).fetchall()


async def test_sites_are_upserted(
    post_batch: PostBatch, customer_token: str, central_db: str
) -> None:
    """A second full set updates changed sites in place."""
    await post_batch(customer_token, "sites", [site(1), site(2)])
    resp = await post_batch(customer_token, "sites", [site(1, name="Plant North"), site(2)])
    assert resp.status == 200
    assert (await resp.json())["accepted"] == 2
    assert _rows(
        central_db, "SELECT id, name, deleted_at IS NULL FROM fleet.sites ORDER BY id"
    ) == [
        (1, "Plant North", True),
        (2, "Plant 2", True),
    ]


async def test_absent_sites_are_marked_deleted_and_come_back(
    post_batch: PostBatch, customer_token: str, central_db: str
) -> None:
    """A site missing from the full set gets deleted_at; it loses it when it reappears."""
    await post_batch(customer_token, "sites", [site(1), site(2), site(3)])
    await post_batch(customer_token, "sites", [site(1), site(3)])
    assert _rows(central_db, "SELECT id FROM fleet.sites WHERE deleted_at IS NOT NULL") == [(2,)]
    await post_batch(customer_token, "sites", [site(1), site(2), site(3)])
    assert _rows(central_db, "SELECT count(*) FROM fleet.sites WHERE deleted_at IS NOT NULL") == [
        (0,)
    ]


async def test_devices_full_set(
    post_batch: PostBatch, customer_token: str, central_db: str
) -> None:
    """Devices follow the same full-set semantics, and an empty set marks every device deleted."""
    await post_batch(customer_token, "devices", [device(7, 1), device(8, 1, name=None)])
    assert _rows(central_db, "SELECT id, serial_number, name FROM fleet.devices ORDER BY id") == [
        (7, "AW21-0007", "Feeder 7"),
        (8, "AW21-0008", None),
    ]
    await post_batch(customer_token, "devices", [])
    assert _rows(central_db, "SELECT count(*) FROM fleet.devices WHERE deleted_at IS NOT NULL") == [
        (2,)
    ]


async def test_rejected_row_does_not_delete_its_site(
    post_batch: PostBatch, customer_token: str, central_db: str
) -> None:
    """A site whose row is invalid in this delivery is dead-lettered but not marked deleted."""
    await post_batch(customer_token, "sites", [site(1), site(2)])
    resp = await post_batch(customer_token, "sites", [site(1), site(2, name="x\u0000y")])
    body = await resp.json()
    assert (body["accepted"], body["rejected"]) == (1, 1)
    assert _rows(central_db, "SELECT count(*) FROM fleet.sites WHERE deleted_at IS NOT NULL") == [
        (0,)
    ]
    assert _rows(central_db, "SELECT batch_type, row_index FROM fleet.rejected_rows") == [
        ("sites", 1)
    ]


async def test_string_limits_and_nul_bytes_reject_the_row(
    post_batch: PostBatch, customer_token: str, central_db: str
) -> None:
    """Over-long strings, NUL bytes, missing fields and naive times each reject only their row."""
    rows = [
        device(1),
        device(2, serial_number="S" * 101),
        device(3, model="Acuvim\u0000"),
        device(4, name="L" * 201),
        {"site_id": 1, "serial_number": "x", "model": "y", "updated_at": "2026-01-01T00:00:00Z"},
        device(6, updated_at="2026-01-01T00:00:00"),  # no offset
    ]
    resp = await post_batch(customer_token, "devices", rows)
    body = await resp.json()
    assert resp.status == 200
    assert (body["accepted"], body["rejected"]) == (1, 5)
    assert _rows(central_db, "SELECT id FROM fleet.devices") == [(1,)]
    assert _rows(central_db, "SELECT count(*) FROM fleet.rejected_rows") == [(5,)]


async def test_duplicate_ids_in_one_set_last_wins(
    post_batch: PostBatch, customer_token: str, central_db: str
) -> None:
    """When a full set names a site twice, the last row wins and the first counts as a duplicate."""
    resp = await post_batch(
        customer_token, "sites", [site(1, name="first"), site(1, name="second")]
    )
    body = await resp.json()
    assert (body["accepted"], body["duplicates"]) == (1, 1)
    assert _rows(central_db, "SELECT name FROM fleet.sites") == [("second",)]


async def test_one_customer_cannot_touch_another_customers_sites(
    post_batch: PostBatch, customer_token: str, other_token: str, central_db: str
) -> None:
    """Customers with the same site ids stay apart, and one's full set never deletes the other's sites."""
    await post_batch(customer_token, "sites", [site(1, name="A1"), site(2, name="A2")])
    await post_batch(
        other_token, "sites", [site(1, name="B1"), {**site(2, name="B2"), "customer_id": 1}]
    )
    await post_batch(other_token, "sites", [])
    rows = _rows(
        central_db,
        """SELECT c.code, s.id, s.name, s.deleted_at IS NOT NULL FROM fleet.sites s
           JOIN fleet.customers c ON c.id = s.customer_id ORDER BY c.code, s.id""",
    )
    assert rows == [
        ("DEV0001", 1, "A1", False),
        ("DEV0001", 2, "A2", False),
        ("DEV0002", 1, "B1", True),
        ("DEV0002", 2, "B2", True),
    ]


async def test_lone_surrogate_escape_is_a_bad_body(
    post_batch: PostBatch, customer_token: str
) -> None:
    """A \\ud800 escape (not encodable text) makes the body invalid JSON: 400, nothing stored."""
    raw = encode([device(1, name="PLACEHOLDER")], gzip=False).replace(b"PLACEHOLDER", b"\\ud800")
    resp = await post_batch(customer_token, "devices", body=raw, gzip=False)
    assert resp.status == 400
    assert (await resp.json())["error"] == "invalid_json"


async def test_full_set_writes_its_audit_row_and_leaves_unchanged_rows_alone(
    post_batch: PostBatch, customer_token: str, central_db: str
) -> None:
    """A full set is audited (counts, customer seen) with its rows; sent again unchanged it
    rewrites no row (received_at kept), changed it rewrites only the changed row."""
    await post_batch(customer_token, "devices", [device(7, 1), device(8, 1)])
    first = _rows(central_db, "SELECT id, received_at FROM fleet.devices ORDER BY id")
    resp = await post_batch(customer_token, "devices", [device(7, 1), device(8, 1)])
    assert (await resp.json())["accepted"] == 2
    assert _rows(central_db, "SELECT id, received_at FROM fleet.devices ORDER BY id") == first
    await post_batch(customer_token, "devices", [device(7, 1), device(8, 1, name="Feeder B")])
    again = _rows(central_db, "SELECT id, received_at FROM fleet.devices ORDER BY id")
    assert again[0] == first[0] and again[1][1] > first[1][1]
    audit = "SELECT batch_type, status, accepted, duplicates, rejected, outcome"
    events = _rows(central_db, f"{audit} FROM fleet.ingest_events ORDER BY received_at")
    assert events == [("devices", 200, 2, 0, 0, "ok")] * 3
    assert _rows(
        central_db,
        "SELECT bool_and(c.last_seen_at IS NOT NULL), sum(k.batches)::int FROM fleet.customers c"
        " JOIN fleet.customer_hourly_counts k ON k.customer_id = c.id",
    ) == [(True, 3)]
