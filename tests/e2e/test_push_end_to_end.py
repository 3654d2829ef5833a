"""The pusher and a real ingestd, each on its own PostgreSQL database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
from pusher.settings import Settings

from tests.fix_customer import seed_inventory, seed_measurements
from tests.fix_ingestd import central_count
from tests.fix_pg import scalar, wait_for
from tests.fix_pusher import running_pusher


async def test_sites_devices_and_measurements_arrive_for_the_token_customer(
    pusher_settings: Settings, customer_db: str, central_db: str
) -> None:
    """Every site, device and measurement of the customer database arrives centrally under the
    customer the token belongs to, with its values intact."""
    seed_inventory(customer_db, sites=2, devices=4)
    expected = seed_measurements(customer_db, devices=4, stop=700)
    async with running_pusher(pusher_settings):
        await wait_for(lambda: central_count(central_db) == expected, what="all measurements")
    customer = scalar(central_db, "SELECT id FROM fleet.customers WHERE code = 'DEV0001'")
    owners = scalar(
        central_db,
        "SELECT array_agg(DISTINCT customer_id) FROM "
        "(SELECT customer_id FROM fleet.sites UNION ALL SELECT customer_id FROM fleet.devices "
        " UNION ALL SELECT customer_id FROM fleet.power_measurements) AS t",
    )
    assert owners == [customer]
    assert central_count(central_db, "sites") == 2
    assert central_count(central_db, "devices") == 4
    mismatches = scalar(
        central_db,
        "SELECT count(*) FROM fleet.power_measurements WHERE v1 <> 230.0 + device_id "
        "OR freq <> 50.0 OR v12 IS NOT NULL",
    )
    assert mismatches == 0
    assert central_count(central_db, "rejected_rows") == 0


async def test_back_dated_replay_arrives(
    pusher_settings: Settings, customer_db: str, central_db: str
) -> None:
    """A replay from a meter's offline buffer (old `time`, new `received_at`) written after the
    pusher has caught up still arrives, with both times preserved."""
    seed_inventory(customer_db)
    first = seed_measurements(customer_db, devices=4, stop=50)
    old_time = datetime.now(UTC).replace(microsecond=0) - timedelta(days=20)
    async with running_pusher(pusher_settings):
        await wait_for(lambda: central_count(central_db) == first, what="first rows")
        with psycopg.connect(customer_db) as conn:
            conn.execute(
                "INSERT INTO monitoring.power_measurements (device_id, time, v1) "
                "VALUES (1, %s, 231.5)",
                (old_time,),
            )
        await wait_for(lambda: central_count(central_db) == first + 1, what="replayed row")
    with psycopg.connect(central_db) as conn:
        time_, received = conn.execute(
            "SELECT time, received_at FROM fleet.power_measurements "
            "WHERE device_id = 1 AND v1 = 231.5"
        ).fetchone() or (None, None)
    assert time_ == old_time
    assert received is not None and received > old_time + timedelta(days=19)


async def test_deleted_site_is_marked_deleted_centrally(
    pusher_settings: Settings, customer_db: str, central_db: str
) -> None:
    """A site removed from the customer database disappears from the next full set and is
    marked deleted centrally."""
    seed_inventory(customer_db, sites=2, devices=2)
    async with running_pusher(pusher_settings):
        await wait_for(lambda: central_count(central_db, "sites") == 2, what="sites")
        with psycopg.connect(customer_db) as conn:
            conn.execute("DELETE FROM monitoring.sites WHERE id = 2")
        await wait_for(
            lambda: (
                scalar(central_db, "SELECT deleted_at FROM fleet.sites WHERE id = 2") is not None
            ),
            what="site 2 marked deleted",
        )
    assert scalar(central_db, "SELECT deleted_at FROM fleet.sites WHERE id = 1") is None
