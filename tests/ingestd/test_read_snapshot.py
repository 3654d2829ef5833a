"""Reads of a continuous aggregate racing its refresh (TimescaleDB).

TimescaleDB reads a continuous aggregate's watermark with `GetTransactionSnapshot()`: under READ
COMMITTED a snapshot newer than the running statement's. A read whose statement began before a
refresh committed and that looks the watermark up after it sees the watermark moved past an
hour whose materialized rows its own snapshot lacks: the hour is in neither part of the
real-time view. CI saw it as an hourly row of the read API with energy null. The read API
(`ingestd.handlers.http.snapshot`) and the stored energy's housekeeping
(`ingestd.storage.energy_upkeep.one_snapshot`) read in REPEATABLE READ transactions, where both
use the transaction's snapshot. These tests pin the race down with a read that sleeps between
its snapshot and its look-up while a refresh commits.
"""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from ingestd.handlers.http import READ_SNAPSHOT

from tests.fix_ingestd import PostBatch
from tests.fix_pg import TIMESCALEDB
from tests.samples import NOW, measurement

pytestmark = pytest.mark.skipif(
    not TIMESCALEDB, reason="TimescaleDB is not installed here: no continuous aggregate to race"
)

HOUR = (NOW - timedelta(hours=3)).replace(minute=0, second=0)

# A read whose statement snapshot is taken before the sleep and whose look-up of the aggregate
# (and of its watermark) runs after it: a STABLE function runs on its caller's snapshot.
LATE_READ = """
CREATE FUNCTION public.late_samples(p_hour timestamptz) RETURNS bigint
LANGUAGE plpgsql STABLE AS $$
BEGIN
    PERFORM pg_sleep(1.0);
    RETURN (SELECT h.samples FROM fleet.hourly_per_device h
            WHERE h.device_id = 4 AND h.bucket = p_hour);
END
$$
"""


def _refresh_during_the_sleep(dsn: str) -> threading.Thread:
    def refresh() -> None:
        time.sleep(0.3)
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(
                "CALL refresh_continuous_aggregate('fleet.hourly_per_device', %s, %s)",
                (HOUR, HOUR + timedelta(hours=1)),
            )

    thread = threading.Thread(target=refresh)
    thread.start()
    return thread


def _late_read(dsn: str, first_statement: str | None) -> Any:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(LATE_READ)
    with psycopg.connect(dsn) as conn:
        if first_statement:
            conn.execute(first_statement)
        refresher = _refresh_during_the_sleep(dsn)
        try:
            row = conn.execute("SELECT public.late_samples(%s)", (HOUR,)).fetchone()
        finally:
            refresher.join(timeout=30)
        conn.rollback()
    return row[0] if row else None


async def _push_one_hour(post_batch: PostBatch, token: str) -> None:
    rows = [measurement(4, HOUR + timedelta(minutes=m)) for m in (0, 30, 50)]
    resp = await post_batch(token, "measurements", rows)
    assert resp.status == 200, await resp.json()


async def test_a_read_in_one_snapshot_sees_the_hour_across_a_refresh(
    post_batch: PostBatch, customer_token: str, central_db: str
) -> None:
    """In the read API's transaction the hour is there, from the raw rows, although the
    refresh that materializes it commits while the read runs."""
    await _push_one_hour(post_batch, customer_token)
    assert _late_read(central_db, READ_SNAPSHOT) == 3


async def test_under_read_committed_the_same_read_loses_the_hour(
    post_batch: PostBatch, customer_token: str, central_db: str
) -> None:
    """Why the read API does not read under READ COMMITTED: the same read misses the hour. (If
    a TimescaleDB release reads the watermark with the statement's snapshot, this fails: the
    REPEATABLE READ transactions are then no longer needed for this.)"""
    await _push_one_hour(post_batch, customer_token)
    assert _late_read(central_db, None) is None
