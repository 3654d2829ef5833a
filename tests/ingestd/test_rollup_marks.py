"""The dirty marks of the hourly rollup: written once per hour and recompute, never lost.

At fleet scale every batch touches every device's current hour; a mark is rewritten only when the
refresher has picked it (storage.rollup, "Marks"). Both storage paths (on TimescaleDB only
hours older than the refresh policy's window are marked: the hours here are 90 days old).
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from aiohttp.test_utils import TestClient
from ingestd.housekeeping import housekeeping_cycle
from ingestd.settings import Settings
from ingestd.storage import detect_mode
from ingestd.storage.rollup import CLEAR_DIRTY, PICK_DIRTY
from ingestd.storage.state import StorageState
from psycopg import AsyncConnection

from tests.fix_ingestd import PostBatch, first_housekeeping_done
from tests.samples import NOW, measurement

HOUR = (NOW - timedelta(days=90)).replace(minute=0, second=0)
MARK = (
    "SELECT version, picked, ctid::text FROM fleet.hourly_dirty WHERE device_id = 1 AND bucket = %s"
)
SAMPLES = "SELECT samples FROM fleet.hourly_rollup WHERE device_id = 1 AND bucket = %s"
HOURLY = "SELECT samples FROM fleet.hourly_per_device WHERE device_id = 1 AND bucket = %s"


@pytest.fixture
def central_db(storage_db: str) -> str:
    """This module's central database: each storage path in turn."""
    return storage_db


def _rows(dsn: str, query: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(query, params).fetchall()


async def _cycle(settings: Settings) -> None:
    """One housekeeping cycle of our own, waiting (bounded) while the app's loop holds the turn."""
    async with await AsyncConnection.connect(settings.database_url, autocommit=True) as conn:
        state = StorageState(mode=await detect_mode(conn), plan=settings.storage)
        for _ in range(100):
            if await housekeeping_cycle(conn, state, settings) is not None:
                return
            await asyncio.sleep(0.1)
        raise AssertionError("the housekeeping turn stayed taken for 10 s")


async def _post(post_batch: PostBatch, token: str, minute: int) -> None:
    resp = await post_batch(
        token, "measurements", [measurement(1, HOUR + timedelta(minutes=minute))]
    )
    assert resp.status == 200, await resp.text()


async def test_touching_a_pending_mark_leaves_it_unwritten(
    post_batch: PostBatch,
    customer_token: str,
    central_db: str,
    ingestd_settings: Settings,
    ingestd_client: TestClient[Any, Any],
) -> None:
    """A second batch into an hour whose mark the refresher has not picked leaves the mark's row as it was."""
    await first_housekeeping_done(ingestd_client)
    await _post(post_batch, customer_token, 0)
    [first] = _rows(central_db, MARK, HOUR)
    await _post(post_batch, customer_token, 10)
    assert _rows(central_db, MARK, HOUR) == [first]
    assert first[:2] == (1, False)
    await _cycle(ingestd_settings)
    assert _rows(central_db, MARK, HOUR) == []
    assert _rows(central_db, HOURLY, HOUR) == [(2,)]


async def test_a_batch_after_the_pick_keeps_its_hour_marked(
    post_batch: PostBatch,
    customer_token: str,
    central_db: str,
    ingestd_settings: Settings,
    ingestd_client: TestClient[Any, Any],
) -> None:
    """A batch that touches an hour after the refresher picked it (before the recompute) is not lost: the clear leaves its mark and the next cycle counts its row."""
    await first_housekeeping_done(ingestd_client)
    await _post(post_batch, customer_token, 0)
    with psycopg.connect(central_db, autocommit=True) as conn:
        picked = conn.execute(PICK_DIRTY, {"settle_s": 0.0, "limit": 100}).fetchall()
    assert [(row[1], row[2], row[3]) for row in picked] == [(1, HOUR, 1)]
    assert _rows(central_db, MARK, HOUR)[0][:2] == (1, True)

    await _post(post_batch, customer_token, 20)  # lands between the pick and the clear
    assert _rows(central_db, MARK, HOUR)[0][:2] == (2, False)
    with psycopg.connect(central_db, autocommit=True) as conn:
        conn.execute(CLEAR_DIRTY, [list(column) for column in zip(*picked, strict=True)][:4])
    assert _rows(central_db, MARK, HOUR)[0][:2] == (2, False)

    await _cycle(ingestd_settings)
    assert _rows(central_db, MARK, HOUR) == []
    assert _rows(central_db, HOURLY, HOUR) == [(2,)]


@pytest.fixture
def plain_only(central_db: str) -> None:
    """Skip on TimescaleDB, before the app's fixtures start (listed first): skipping a test whose
    app had just started hung in the app's teardown at the lowest versions (make test-lowest)."""
    if _rows(central_db, "SELECT count(*) FROM pg_extension WHERE extname = 'timescaledb'") != [
        (0,)
    ]:
        pytest.skip(
            "TimescaleDB marks no sample of the current hour: real-time aggregation covers it"
        )


async def test_the_hour_being_written_waits_until_it_ends(
    plain_only: None,
    post_batch: PostBatch,
    customer_token: str,
    central_db: str,
    ingestd_settings: Settings,
) -> None:
    """Plain path: the current hour is not recomputed while it lasts (the view computes it from the raw rows); a past hour of the same batch is."""
    dsn = central_db
    now_hour = NOW.replace(minute=0, second=0)
    resp = await post_batch(
        customer_token,
        "measurements",
        [measurement(1, NOW), measurement(1, now_hour - timedelta(hours=2))],
    )
    assert resp.status == 200, await resp.text()
    await _cycle(ingestd_settings)
    assert _rows(dsn, SAMPLES, now_hour - timedelta(hours=2)) == [(1,)]
    # NOW's hour is still open unless the clock turned an hour since the samples were made.
    if _rows(dsn, "SELECT now() < %s", now_hour + timedelta(hours=1)) == [(True,)]:
        assert _rows(dsn, SAMPLES, now_hour) == []
        assert _rows(dsn, MARK, now_hour)[0][:2] == (1, False)
    assert _rows(dsn, HOURLY, now_hour) == [(1,)]
