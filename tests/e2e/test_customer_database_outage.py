"""The pusher while the customer's own PostgreSQL goes away (immediate shutdown) and comes back."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import replace

import pytest
from fleetdev.pgcluster import PgCluster, temporary_cluster
from pusher.migrate import apply_migrations
from pusher.settings import Settings

from tests.fix_customer import seed_inventory, seed_measurements
from tests.fix_ingestd import central_count
from tests.fix_pg import scalar, wait_for
from tests.fix_pusher import metric, running_pusher, scrape, with_metrics

DISTINCT_KEYS = "SELECT count(DISTINCT (device_id, time)) FROM fleet.power_measurements"


@pytest.fixture
def customer_cluster() -> Iterator[PgCluster]:
    """A customer PostgreSQL of this test's own, since the test stops it (commits are durable
    across the immediate stop: synchronous_commit on)."""
    with temporary_cluster(prefix="fleet-customer-outage-", synchronous_commit="on") as cluster:
        yield cluster


async def test_customer_database_down_then_back_resumes_exactly_once(
    customer_cluster: PgCluster, pusher_settings: Settings, central_db: str
) -> None:
    """With the customer database stopped hard in the middle of a backlog, the pusher logs it,
    counts it, backs off and retries; once the database is back it resumes from its stored
    cursor, and every row, including rows written after the restart, is stored centrally once."""
    dsn = customer_cluster.create_database("meters")
    apply_migrations(dsn)
    seed_inventory(dsn)
    expected = seed_measurements(dsn, devices=4, stop=1500)
    settings = with_metrics(
        replace(pusher_settings, database_url=dsn, batch_size=100, max_batches_per_tick=1)
    )
    async with running_pusher(settings) as task:
        await wait_for(lambda: central_count(central_db) >= 1000, what="the drain under way")
        await asyncio.to_thread(customer_cluster.stop, "immediate")
        stopped_at = central_count(central_db)
        assert stopped_at < expected - settings.batch_size, "stopped in the middle of the drain"
        await asyncio.sleep(1.0)
        during = await scrape(settings)
        assert central_count(central_db) - stopped_at <= settings.batch_size, "one in flight"
        assert metric(during, "fleet_pusher_database_errors_total") >= 2, "retried, backing off"
        await asyncio.to_thread(customer_cluster.start)
        more = seed_measurements(dsn, devices=4, start=1500, stop=1600)
        await wait_for(
            lambda: central_count(central_db) == expected + more, what="every row", timeout_s=30
        )
        await asyncio.sleep(0.3)
        after = await scrape(settings)
    assert task.exception() is None
    assert central_count(central_db) == expected + more
    assert scalar(central_db, DISTINCT_KEYS) == expected + more
    assert central_count(central_db, "rejected_rows") == 0
    assert metric(after, "fleet_pusher_backlog_rows") == 0
    shipped = metric(after, "fleet_pusher_rows_shipped_total", resource="measurements")
    assert shipped >= expected + more
