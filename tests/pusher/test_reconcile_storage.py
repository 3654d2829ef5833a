"""Reconciliation on both storage paths: rows lost centrally — scattered rows and a whole
hour, through compressed chunks on TimescaleDB — all come back within one pass, none twice."""

from __future__ import annotations

import asyncio

import pytest
from pusher.settings import Settings

from tests.fix_customer import seed_inventory, seed_measurements
from tests.fix_ingestd import central_count
from tests.fix_pg import scalar, wait_for
from tests.fix_pusher import metric, running_pusher, scrape, with_metrics
from tests.pusher.test_reconcile import keys, lose_rows, pass_settings

ROWS_S = 5400  # 1.5 hours of one sample a second per device


@pytest.fixture
def central_db(storage_db: str) -> str:
    """This module's central database: each storage path in turn."""
    return storage_db


async def test_rows_lost_centrally_come_back_within_one_cycle(
    pusher_settings: Settings, customer_db: str, central_db: str
) -> None:
    """Rows and a whole hour deleted centrally while the pusher runs are all stored again by
    the next pass — marked as repair, counted apart — and no key is stored twice."""
    seed_inventory(customer_db, devices=3)
    total = seed_measurements(customer_db, devices=3, stop=ROWS_S)
    settings = with_metrics(pass_settings(pusher_settings))
    async with running_pusher(settings):
        await wait_for(lambda: central_count(central_db) == total, what="the first push")
        # In a thread: the in-process ingestd must go on committing (compress_chunk waits for a
        # digest transaction it has open; blocking the loop here deadlocked to the timeout).
        lost = await asyncio.to_thread(lose_rows, central_db)
        assert lost > 3600
        await wait_for(
            lambda: (
                scalar(customer_db, "SELECT rows_restored FROM app.fleet_reconcile_state") == lost
            ),
            timeout_s=60,
            what="the repair",
        )
        text = await scrape(settings)
    assert keys(central_db, "fleet.power_measurements") == keys(
        customer_db, "monitoring.power_measurements"
    )
    assert metric(text, "fleet_pusher_reconcile_rows_restored_total") == lost
    assert metric(text, "fleet_pusher_reconcile_rows_resent_total") >= lost
    assert metric(text, "fleet_pusher_rows_shipped_total", resource="measurements") == total
    restored = scalar(
        central_db,
        "SELECT sum(accepted) FROM fleet.ingest_events WHERE repair AND status = 200",
    )
    assert restored == lost
