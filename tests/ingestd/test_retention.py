"""Retention of the audit trail and the dead letters, while batches keep arriving."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from aiohttp.test_utils import TestClient
from ingestd.housekeeping import housekeeping_cycle
from ingestd.keys import STORAGE
from ingestd.settings import Settings
from psycopg import AsyncConnection

from tests.fix_ingestd import PostBatch
from tests.samples import measurements

OLD_EVENTS = """
INSERT INTO fleet.ingest_events (batch_id, customer_id, batch_type, received_at, accepted,
    wire_bytes, duration_ms, outcome, status)
SELECT gen_random_uuid(), c.id, 'measurements', now() - make_interval(days => %s) - g * interval '1 s',
       10, 100, 1.0, 'ok', 200
FROM generate_series(1, %s) g, fleet.customers c WHERE c.code = 'DEV0001'
"""
OLD_REJECTED = """
INSERT INTO fleet.rejected_rows (customer_id, batch_id, batch_type, row_index, reason, payload,
    received_at)
SELECT c.id, gen_random_uuid(), 'measurements', 0, 'time too far ahead', '{}',
       now() - make_interval(days => %s)
FROM generate_series(1, %s) g, fleet.customers c WHERE c.code = 'DEV0001'
"""
OLD_REVISIONS = """
INSERT INTO fleet.energy_revisions (customer_id, device_id, span_start, span_end, revised_at)
SELECT c.id, g, now() - interval '400 days', now() - interval '399 days',
       now() - make_interval(days => %s)
FROM generate_series(1, %s) g, fleet.customers c WHERE c.code = 'DEV0001'
"""
# Only those inserted above: the batches pushed meanwhile are late themselves (two hours old).
REVISIONS_LEFT = (
    "SELECT count(*) FROM fleet.energy_revisions WHERE span_start < now() - interval '398 days'"
)
COUNT = """
SELECT (SELECT count(*) FROM fleet.ingest_events WHERE received_at < now() - interval '30 days'),
       (SELECT count(*) FROM fleet.ingest_events WHERE received_at >= now() - interval '30 days'),
       (SELECT count(*) FROM fleet.rejected_rows WHERE received_at < now() - interval '90 days'),
       (SELECT count(*) FROM fleet.rejected_rows WHERE received_at >= now() - interval '90 days')
"""


async def test_retention_removes_only_expired_rows_while_ingest_goes_on(
    ingestd_client: TestClient[Any, Any],
    post_batch: PostBatch,
    customer_token: str,
    central_db: str,
    ingestd_settings: Settings,
) -> None:
    """Audit rows and corrections-feed revisions older than 30 days and dead letters older than 90
    go (more than one delete batch of each); rows inside retention stay, and the batches pushed meanwhile all succeed and
    all keep their audit rows."""
    with psycopg.connect(central_db, autocommit=True) as conn:
        conn.execute(OLD_EVENTS, (31, 12_000))
        conn.execute(OLD_EVENTS, (29, 50))
        conn.execute(OLD_REJECTED, (91, 6_000))
        conn.execute(OLD_REJECTED, (89, 20))
        conn.execute(OLD_REVISIONS, (31, 7))
        conn.execute(OLD_REVISIONS, (29, 3))
    settings = replace(ingestd_settings, audit_retention_days=30, rejected_retention_days=90)
    state = ingestd_client.server.app[STORAGE]
    base = datetime.now(UTC) - timedelta(hours=2)
    statuses: list[int] = []

    async def push() -> None:
        for i in range(20):
            rows = measurements(5, start=base + timedelta(minutes=5 * i))
            statuses.append((await post_batch(customer_token, "measurements", rows)).status)

    async def upkeep() -> None:
        async with await AsyncConnection.connect(central_db, autocommit=True) as conn:
            for _ in range(3):
                await housekeeping_cycle(conn, state, settings, maintenance=True)
                await asyncio.sleep(0.05)

    await asyncio.wait_for(asyncio.gather(push(), upkeep()), 120)
    assert statuses == [200] * 20
    with psycopg.connect(central_db) as conn:
        row = conn.execute(COUNT).fetchone()
        revisions = conn.execute(REVISIONS_LEFT).fetchone()
    assert row == (0, 50 + 20, 0, 20)
    assert revisions == (3,)
