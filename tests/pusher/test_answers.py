"""What the pusher does with each of ingestd's answers (PROTOCOL.md, last table)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import psycopg
from pusher.settings import Settings

from tests.fix_customer import seed_inventory, seed_measurements
from tests.fix_faults import Answer, FaultFront
from tests.fix_ingestd import central_count
from tests.fix_pg import scalar, wait_for
from tests.fix_pusher import running_pusher

STATE = "SELECT {} FROM app.fleet_push_state WHERE resource = 'measurements'"


async def test_faults_in_turn_then_everything_arrives_exactly_once(
    pusher_settings: Settings, customer_db: str, central_db: str, fault_front: FaultFront
) -> None:
    """Answered 413, 429, 503, 500 and 401 in turn, the pusher keeps its cursor, waits as told
    (Retry-After in seconds and as an HTTP-date) and in the end every row arrives once."""
    seed_inventory(customer_db)
    expected = seed_measurements(customer_db, devices=4, stop=300)
    retry_at = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=3)
    offset = datetime.now(UTC).timestamp() - time.monotonic()
    fault_front.plan(
        Answer.json(413, {"error": "payload_too_large", "max_bytes": 1000}),
        Answer.json(429, headers={"Retry-After": "1"}),
        Answer.json(503, headers={"Retry-After": format_datetime(retry_at, usegmt=True)}),
        Answer.json(500),
        Answer.json(401, {"error": "unauthorized"}),
    )
    settings = replace(pusher_settings, ingest_url=fault_front.url, backoff_cap_s=3.0)
    async with running_pusher(settings):
        await wait_for(lambda: central_count(central_db) == expected, what="all rows")
    seen = fault_front.measurements()
    assert [s.status for s in seen[:5]] == [413, 429, 503, 500, 401]
    assert seen[1].rows == seen[0].rows // 2, "413 halves the batch"
    assert seen[2].at - seen[1].at >= 1.0, "429 waits Retry-After seconds"
    assert seen[3].at + offset >= retry_at.timestamp() - 0.05, "503 waits until the HTTP-date"
    assert seen[4].at - seen[3].at < 1.0, "500 retries after a short backoff"
    assert seen[5].at - seen[4].at >= settings.backoff_cap_s * 0.9, "401 waits the cap"
    assert all(s.cursor for s in seen), "every batch carries X-Push-Cursor"
    assert scalar(central_db, "SELECT sum(duplicates) FROM fleet.ingest_events") == 0
    assert central_count(central_db, "rejected_rows") == 0


async def test_413_halves_the_batch_and_grows_it_back(
    pusher_settings: Settings, customer_db: str, central_db: str, fault_front: FaultFront
) -> None:
    """Against a server refusing batches over 120 rows, batches halve until they fit, then grow
    back towards the configured size after successes; nothing is lost."""
    expected = seed_measurements(customer_db, devices=4, stop=600)
    fault_front.refuse = lambda items: len(items) > 120
    async with running_pusher(replace(pusher_settings, ingest_url=fault_front.url)):
        await wait_for(lambda: central_count(central_db) == expected, what="all rows")
    accepted = [s.rows for s in fault_front.measurements() if s.status == 200]
    refused = [s.rows for s in fault_front.requests if s.status == 413]
    assert refused[:3] == [500, 250, 125]
    assert max(accepted) <= 120
    assert accepted[0] == 62
    assert max(accepted) > 62, "grows back after successes"
    assert scalar(customer_db, STATE.format("batch_size")) <= 500


async def test_single_row_refused_alone_is_quarantined(
    pusher_settings: Settings, customer_db: str, central_db: str, fault_front: FaultFront
) -> None:
    """A row that ingestd refuses with 413 even alone is kept in app.fleet_push_quarantine with
    the reason, and the cursor moves on: every other row arrives."""
    expected = seed_measurements(customer_db, devices=2, stop=200)
    with psycopg.connect(customer_db) as conn:
        conn.execute(
            "UPDATE monitoring.power_measurements SET v1 = 999.0 WHERE device_id = 2 AND "
            "time = (SELECT min(time) + interval '50 s' FROM monitoring.power_measurements)"
        )
    fault_front.refuse = lambda items: any(row.get("v1") == 999.0 for row in items)
    async with running_pusher(replace(pusher_settings, ingest_url=fault_front.url)):
        await wait_for(lambda: central_count(central_db) == expected - 1, what="all other rows")
        await asyncio.sleep(0.3)
    assert central_count(central_db) == expected - 1
    with psycopg.connect(customer_db) as conn:
        rows = conn.execute(
            "SELECT device_id, payload, reason FROM app.fleet_push_quarantine"
        ).fetchall()
    assert len(rows) == 1
    device_id, payload, reason = rows[0]
    assert device_id == 2 and '"v1":999' in payload.replace(" ", "") and "413" in reason


async def test_unknown_token_is_permanent_and_not_retried_in_a_loop(
    pusher_settings: Settings, customer_db: str, central_db: str, fault_front: FaultFront
) -> None:
    """With a token ingestd does not know, the pusher records the 401 with its cause, keeps its
    cursor at the start and retries only at the backoff cap."""
    seed_inventory(customer_db)
    seed_measurements(customer_db, devices=2, stop=20)
    settings = replace(
        pusher_settings,
        ingest_url=fault_front.url,
        token="flt_not-a-known-token",
        backoff_cap_s=0.5,
    )
    async with running_pusher(settings):
        await asyncio.sleep(1.6)
    statuses = fault_front.statuses()
    assert set(statuses) == {401}
    assert 2 <= len(statuses) <= 5
    assert central_count(central_db) == 0
    assert scalar(customer_db, STATE.format("cursor")) is None
    assert scalar(customer_db, STATE.format("last_status")) == 401
    assert "unauthorized" in scalar(customer_db, STATE.format("last_error"))
    assert scalar(customer_db, STATE.format("consecutive_failures")) == len(statuses)
