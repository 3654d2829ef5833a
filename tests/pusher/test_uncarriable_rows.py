"""Rows whose time or received_at no RFC 3339 timestamp can carry (±infinity, BC, year 10000 on):
quarantined on the gateway with the reason as the cursor passes them, never sent, never a reason
for the pusher to stop; every other row arrives exactly once."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import psycopg
from pusher.ops.status import collect_status
from pusher.settings import Settings

from tests.chaos.checker import check
from tests.fix_customer import seed_inventory, seed_measurements
from tests.fix_ingestd import central_count
from tests.fix_pg import wait_for
from tests.fix_pusher import running_pusher

# In push order each row has a transaction of its own, between ordinary rows; the last row of
# some batch is one of them (the cursor must pass it), one device holds several in one
# transaction (the cursor's markers pass them together).
UNCARRIABLE = [
    ("infinity", None),
    ("-infinity", None),
    ("0044-03-15 12:00:00+00 BC", None),
    ("0001-01-01 00:00:00+00", None),
    ("10000-01-01 00:00:00+00", None),
    ("294276-12-31 23:59:59+00", None),
    (None, "infinity"),
    (None, "-infinity"),
]
INSERT_ROW = """
INSERT INTO monitoring.power_measurements (device_id, time, received_at, v1)
VALUES (%(device)s, coalesce(%(time)s::timestamptz, now() - make_interval(secs => %(n)s)),
        coalesce(%(received_at)s::timestamptz, now()), 230.0)
"""
SAME_TRANSACTION = ["infinity", "-infinity", "20000-01-01 00:00:00+00", "0100-01-01 00:00:00+00 BC"]


async def test_uncarriable_times_are_quarantined_and_the_cursor_moves_on(
    pusher_settings: Settings, customer_db: str, central_db: str
) -> None:
    """Eight uncarriable rows in transactions of their own and four in one transaction, among
    ordinary rows: the pusher keeps running, quarantines the twelve with a reason naming the
    column, `pusher status` still reads, and the ordinary rows all arrive once."""
    seed_inventory(customer_db)
    good = seed_measurements(customer_db, devices=2, stop=40)
    with psycopg.connect(customer_db, autocommit=True) as conn:
        for n, (when, received_at) in enumerate(UNCARRIABLE):
            conn.execute(
                INSERT_ROW, {"device": 3, "time": when, "received_at": received_at, "n": n}
            )
            good += seed_measurements(customer_db, devices=1, start=100 + n * 7, stop=107 + n * 7)
        with conn.transaction():
            for when in SAME_TRANSACTION:
                conn.execute(INSERT_ROW, {"device": 4, "time": when, "received_at": None, "n": 0})
        good += seed_measurements(customer_db, devices=2, start=500, stop=520)
    settings = replace(pusher_settings, batch_size=7)
    async with running_pusher(settings) as task:
        await wait_for(lambda: central_count(central_db) == good, what="every ordinary row")
        await asyncio.sleep(0.5)
        assert not task.done(), "the pusher kept running"
        status = await collect_status(customer_db, 60.0)
    assert status["resources"]["measurements"]["consecutive_failures"] == 0
    report = check(customer_db, central_db, "DEV0001")
    assert (report.lost, report.duplicated, report.extra) == (0, 0, 0), report.summary()
    assert report.total("quarantined") == len(UNCARRIABLE) + len(SAME_TRANSACTION)
    with psycopg.connect(customer_db) as conn:
        reasons = [r for (r,) in conn.execute("SELECT reason FROM app.fleet_push_quarantine")]
    assert sum("received_at" in r for r in reasons) == 2
    assert all("outside what RFC 3339 carries" in r for r in reasons), reasons
