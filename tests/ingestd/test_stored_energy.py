"""The stored energy per device-hour (`fleet.energy_hours`): reads that take it answer what the
computation from the hourly summaries answers, on both storage paths, before and after a
back-fill, and the store follows the marks and the frontier (ingestd.storage.stored_energy).

Samples go in through the real HTTP ingest path; the answers come from the read API and the SQL
functions, checked against the slow reference computed from the raw rows and against the same
functions with the store ignored (every frontier at '-infinity', in a transaction rolled back).
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import psycopg
import pytest
from aiohttp.test_utils import TestClient
from ingestd.settings import Settings
from ingestd.storage.energy_upkeep import advance_stored_energy, energy_slices, seed_frontiers

from tests.fix_ingestd import PostBatch, first_housekeeping_done
from tests.ingestd import energy_reference as ref
from tests.ingestd.test_energy import (
    ADMIN,
    Api,
    _assert_matches,
    _ingest,
    _reference_samples,
    meter,
)
from tests.ingestd.test_storage import _cycle, _rows
from tests.samples import NOW, measurement

HOUR = timedelta(hours=1)
ENERGY = ("energy_imp_kwh", "energy_exp_kwh", "energy_q_imp_kvarh", "energy_q_exp_kvarh")
START = (NOW - timedelta(days=6)).replace(hour=20, minute=0, second=0, microsecond=0)
ZONES = ("Europe/Amsterdam", "Asia/Kolkata", "America/St_Johns")


@pytest.fixture
def central_db(storage_db: str) -> str:
    """This module's central database: each storage path in turn."""
    return storage_db


@pytest.fixture
def ingestd_settings(ingestd_settings: Settings) -> Settings:
    """The test ingestd, with the read API on."""
    return replace(ingestd_settings, admin_token=ADMIN)


@pytest.fixture
def api(ingestd_client: TestClient[Any, Any]) -> Api:
    """The read API of the test's ingestd."""
    return Api(ingestd_client)


def _meter_rows() -> list[dict[str, Any]]:
    """Two days of a 10-minute meter whose power steps every hour, a 5-hour hole, a register
    reset, and a reactive register sent on every third sample only."""
    rows = []
    register, step = 500.0, timedelta(minutes=10)
    for i in range(2 * 24 * 6):
        t = START + step * i
        kw = 5.0 + (i // 6) % 7 * 3.0
        register = 2.0 if i == 150 else register + kw * step / HOUR
        if START + 20 * HOUR <= t < START + 25 * HOUR:
            continue
        rows.append(
            measurement(
                1, t, p_total=kw, energy_imp_kwh=register, energy_exp_kwh=1.0,
                energy_q_imp_kvarh=100.0 + i if i % 3 == 0 else None,
            )
        )  # fmt: skip
    return rows


def _sql(dsn: str, query: str, *params: Any, ignore_store: bool = False) -> list[tuple[Any, ...]]:
    """Rows of `query`; with `ignore_store`, as if nothing were stored (rolled back after)."""
    with psycopg.connect(dsn) as conn:
        if ignore_store:
            conn.execute("UPDATE fleet.energy_frontier SET stored_until = '-infinity'")
        rows = conn.execute(query, params).fetchall()
        conn.rollback()
    return rows


def _same(a: list[tuple[Any, ...]], b: list[tuple[Any, ...]]) -> None:
    assert len(a) == len(b), (a, b)
    for x, y in zip(a, b, strict=True):
        for u, v in zip(x, y, strict=True):
            if isinstance(u, float) and isinstance(v, float):
                assert math.isclose(u, v, rel_tol=1e-9, abs_tol=1e-9), (x, y)
            else:
                assert u == v, (x, y)


def _answers(dsn: str, *, ignore_store: bool = False) -> list[list[tuple[Any, ...]]]:
    """Hourly, daily in each zone, one device's total per Kolkata day and two devices' per
    Amsterdam day (one unknown), as SQL answers them."""
    first, end = START - 2 * HOUR, START + 52 * HOUR
    out = [_sql(dsn, "SELECT * FROM fleet.hourly_energy(1, 1, %s, %s)", first, end,
                ignore_store=ignore_store)]  # fmt: skip
    day = START.date() - timedelta(days=1)
    for zone in ZONES:
        out.append(_sql(dsn, "SELECT * FROM fleet.daily_energy(1, 1, %s, %s, %s)", day,
                        day + timedelta(days=4), zone, ignore_store=ignore_store))  # fmt: skip
    edges = [ref.local_midnight(day + timedelta(days=i), "Asia/Kolkata") for i in range(5)]
    out.append(_sql(dsn, "SELECT * FROM fleet.devices_energy(1, ARRAY[1]::bigint[], %s)", edges,
                    ignore_store=ignore_store))  # fmt: skip
    # whole-hour days: a stored device is read in one pass (device 2, unknown, as before)
    edges = [ref.local_midnight(day + timedelta(days=i), "Europe/Amsterdam") for i in range(5)]
    out.append(_sql(dsn, "SELECT * FROM fleet.devices_energy(1, ARRAY[1, 2]::bigint[], %s)",
                    edges, ignore_store=ignore_store))  # fmt: skip
    return out


def _live_from(dsn: str) -> datetime:
    """The first hour read live ('infinity', nothing live, as the last day Python can hold)."""
    query = "SELECT least(fleet.energy_live_from(1, 1), '9999-12-31Z')"
    return _rows(dsn, query)[0][0]  # type: ignore[no-any-return]


async def _check_reference(api: Api, dsn: str) -> None:
    samples = _reference_samples(dsn, 1)
    first, end = START - 2 * HOUR, START + 52 * HOUR
    _assert_matches(await api.hourly(1, first, end), ref.hourly(samples, first, end), "bucket")
    day = START.date() - timedelta(days=1)
    for zone in ZONES:
        got = await api.daily(1, day, day + timedelta(days=4), zone)
        whole = ref.local_midnight(day, zone).minute == 0
        want = ref.daily(samples, day, day + timedelta(days=4), zone)
        _assert_matches(got, want, "day_start", averages=whole)


async def test_stored_hours_answer_as_the_computation(
    post_batch: PostBatch,
    customer_token: str,
    api: Api,
    central_db: str,
    ingestd_settings: Settings,
    ingestd_client: TestClient[Any, Any],
) -> None:
    """After a housekeeping cycle the device's hours are stored (the hole's too) and read from
    the store; hourly, daily (three zones) and total answers equal the computation from the
    summaries and the reference from the raw rows."""  # fmt: skip
    await first_housekeeping_done(ingestd_client)  # its cycle cannot race ours
    await _ingest(post_batch, customer_token, _meter_rows())
    await _cycle(ingestd_settings)
    last_hour = ref.floor_hour(START + 48 * HOUR - timedelta(minutes=10))
    assert _live_from(central_db) >= last_hour
    hole = _rows(central_db, """SELECT count(*) FROM fleet.energy_hours
                                 WHERE bucket >= %s AND bucket < %s""",
                 START + 21 * HOUR, START + 24 * HOUR)  # fmt: skip
    assert hole == [(3,)]
    _same_all(_answers(central_db), _answers(central_db, ignore_store=True))
    await _check_reference(api, central_db)


def _same_all(a: list[list[tuple[Any, ...]]], b: list[list[tuple[Any, ...]]]) -> None:
    for x, y in zip(a, b, strict=True):
        _same(x, y)


async def test_a_backfill_is_read_live_until_the_store_has_it(
    post_batch: PostBatch,
    customer_token: str,
    api: Api,
    central_db: str,
    ingestd_settings: Settings,
    ingestd_client: TestClient[Any, Any],
) -> None:
    """Samples delivered into the stored hole are read live from the nearest hour before their
    mark (on plain PostgreSQL in the answers at once; TimescaleDB shows them once refreshed, as
    without a store), and after the next cycle from the store, equal to the reference."""  # fmt: skip
    await first_housekeeping_done(ingestd_client)  # its cycle cannot race ours
    rows = _meter_rows()
    await _ingest(post_batch, customer_token, rows)
    await _cycle(ingestd_settings)
    late = [measurement(1, START + 22 * HOUR + timedelta(minutes=5), p_total=1.0,
                        energy_imp_kwh=rows[119]["energy_imp_kwh"] + 40.0,
                        energy_exp_kwh=1.0)]  # fmt: skip
    await _ingest(post_batch, customer_token, late)
    assert _live_from(central_db) <= START + 19 * HOUR
    _same_all(_answers(central_db), _answers(central_db, ignore_store=True))
    if _rows(central_db, "SELECT to_regclass('fleet.hourly_rollup') IS NOT NULL")[0][0]:
        await _check_reference(api, central_db)  # TimescaleDB: once refreshed (docs/ENERGY.md)
    await _cycle(ingestd_settings)
    assert _live_from(central_db) >= START + 47 * HOUR
    assert _rows(central_db, "SELECT count(*) FROM fleet.hourly_dirty WHERE bucket < %s",
                 START + 40 * HOUR) == [(0,)]  # fmt: skip
    _same_all(_answers(central_db), _answers(central_db, ignore_store=True))
    await _check_reference(api, central_db)


_EVERY = timedelta(seconds=10)
_INTO_HOUR = 3 * _EVERY
"""How far into the current hour the live-hour test starts: the samples up to now but the last
hold one of the current hour (sampled every minute, the test failed in an hour's first two
minutes, when they held none)."""


async def test_the_current_hour_is_read_live(
    post_batch: PostBatch,
    customer_token: str,
    api: Api,
    central_db: str,
    ingestd_settings: Settings,
    ingestd_client: TestClient[Any, Any],
) -> None:
    """A meter sampling up to now: after a cycle the ended hours are stored and the current one
    is not (plain PostgreSQL: its marks say so; TimescaleDB: the frontier is its start), and a
    sample arriving in it counts at once."""  # fmt: skip
    await first_housekeeping_done(ingestd_client)  # its cycle cannot race ours
    now = datetime.now(NOW.tzinfo)
    if now - ref.floor_hour(now) < _INTO_HOUR:  # the current hour must hold a stored sample
        await asyncio.sleep((_INTO_HOUR - (now - ref.floor_hour(now))).total_seconds())
        now = datetime.now(NOW.tzinfo)
    start = ref.floor_hour(now) - 3 * HOUR
    rows = meter(1, start, _EVERY, int((now - start) / _EVERY), 6.0)
    more = rows[-1:]
    await _ingest(post_batch, customer_token, rows[:-1])
    await _cycle(ingestd_settings)
    stored = _rows(central_db, "SELECT max(bucket) FROM fleet.energy_hours")[0][0]
    assert stored is not None and stored >= start + HOUR
    assert _live_from(central_db) < ref.floor_hour(now)
    await _ingest(post_batch, customer_token, more)
    samples = _reference_samples(central_db, 1)
    got = await api.hourly(1, start, ref.floor_hour(now) + HOUR)
    _assert_matches(got, ref.hourly(samples, start, ref.floor_hour(now) + HOUR), "bucket")


async def test_a_frontier_step_waits_for_the_summaries_and_its_time_budget(
    post_batch: PostBatch,
    customer_token: str,
    central_db: str,
    ingestd_settings: Settings,
    ingestd_client: TestClient[Any, Any],
) -> None:
    """A frontier step moves no further than the store's summaries are complete: on TimescaleDB
    exactly to the continuous aggregate's watermark (the hours after it, in the aggregate's
    real-time part, wait for their refresh), on plain PostgreSQL at once; and a step whose time
    budget is spent starts its first slice of devices only (a slice of one device here)."""  # fmt: skip
    await first_housekeeping_done(ingestd_client)  # its cycle cannot race ours
    now = datetime.now(NOW.tzinfo)
    start = ref.floor_hour(now) - 3 * HOUR
    count = int((now - start) / timedelta(minutes=1))
    rows = [*meter(1, start, timedelta(minutes=1), count, 6.0),
            *meter(2, start, timedelta(minutes=1), count, 4.0)]  # fmt: skip
    await _ingest(post_batch, customer_token, rows)
    timescale = not _rows(central_db, "SELECT to_regclass('fleet.hourly_rollup') IS NOT NULL")[0][0]
    with psycopg.connect(central_db, autocommit=True) as conn:
        conn.execute("""INSERT INTO fleet.energy_frontier (customer_id, device_id)
                        SELECT DISTINCT customer_id, device_id FROM fleet.hourly_dirty
                        ON CONFLICT DO NOTHING""")  # fmt: skip

    async def step(seconds: float) -> int:
        async with await psycopg.AsyncConnection.connect(central_db, autocommit=True) as conn:
            return await advance_stored_energy(conn, settle_s=0.0, budget_hours=5000,
                                               hold=not timescale, seconds=seconds,
                                               slice_devices=1)  # fmt: skip

    off_horizon = """SELECT count(*) FROM fleet.energy_frontier
                     WHERE stored_until <> fleet.energy_horizon()"""
    if timescale:
        await step(10.0)
        assert _rows(central_db, off_horizon) == [(0,)]
        await _cycle(ingestd_settings)  # refreshes the marked hours: the watermark moves
        assert _rows(central_db, off_horizon) == [(0,)]
        assert _rows(central_db, "SELECT fleet.energy_horizon() >= %s", ref.floor_hour(now)) == [
            (True,)
        ]
        with psycopg.connect(central_db, autocommit=True) as conn:
            conn.execute("UPDATE fleet.energy_frontier SET stored_until = '-infinity'")
    assert await step(0.0) == 1
    assert await step(10.0) == 1
    assert await step(10.0) == 0


def test_emptying_the_marks_forgets_the_store(central_db: str) -> None:
    """TRUNCATE of fleet.hourly_dirty (what changed is no longer known) empties the store and
    puts every frontier back to '-infinity', so reads compute everything until it is rebuilt."""
    with psycopg.connect(central_db, autocommit=True) as conn:
        conn.execute("INSERT INTO fleet.energy_frontier VALUES (1, 1, now())")
        conn.execute("""INSERT INTO fleet.energy_hours VALUES
                        (1, 1, date_bin('1 hour', now(), 'epoch'), 1, 1, 1, 1, false, 60, 1, now(), now())""")
        conn.execute("TRUNCATE fleet.hourly_dirty")
    assert _rows(central_db, "SELECT count(*) FROM fleet.energy_hours") == [(0,)]
    assert _rows(central_db, "SELECT stored_until::text FROM fleet.energy_frontier") == [
        ("-infinity",)
    ]


async def test_new_devices_get_frontiers_from_the_rows_sampled_since_the_last_seed(
    post_batch: PostBatch,
    customer_token: str,
    central_db: str,
    ingestd_client: TestClient[Any, Any],
) -> None:
    """A device known only by its samples gets a frontier from a seed whose window holds them;
    on TimescaleDB (samples of the current hour mark nothing) one sampled before the window waits
    for the next whole-hour seed, on plain PostgreSQL its marks seed it at once."""
    await first_housekeeping_done(ingestd_client)  # its next seed is a minute away
    now = datetime.now(NOW.tzinfo)
    if now - ref.floor_hour(now) < timedelta(seconds=10):  # both samples in the current hour
        await asyncio.sleep(10.5 - (now - ref.floor_hour(now)).total_seconds())
        now = datetime.now(NOW.tzinfo)
    before, recent = now - timedelta(seconds=8), now - timedelta(seconds=1)
    await _ingest(post_batch, customer_token, [measurement(7, before), measurement(8, recent)])
    timescale = not _rows(central_db, "SELECT to_regclass('fleet.hourly_rollup') IS NOT NULL")[0][0]
    seeded = "SELECT device_id FROM fleet.energy_frontier WHERE device_id IN (7, 8) ORDER BY 1"
    async with await psycopg.AsyncConnection.connect(central_db, autocommit=True) as conn:
        await seed_frontiers(conn, timescale=timescale, since=now - timedelta(seconds=4))
        assert _rows(central_db, seeded) == ([(8,)] if timescale else [(7,), (8,)])
        await seed_frontiers(conn, timescale=timescale)  # the last hour's rows
    assert _rows(central_db, seeded) == [(7,), (8,)]


def test_a_round_is_stored_in_bounded_slices() -> None:
    """A round's devices go to the database in slices of at most so many devices and, past a
    slice's first device, so many hours to store (a backfill's week counts 168)."""
    at = START
    hour_end = [(1, d, at - HOUR, at + HOUR) for d in range(5)]
    assert [len(s) for s in energy_slices(hour_end, 2, 5000)] == [2, 2, 1]
    assert [len(s) for s in energy_slices(hour_end, 10, 4)] == [2, 2, 1]
    weeks = [(1, d, at, at + 168 * HOUR) for d in range(3)]
    assert [len(s) for s in energy_slices(weeks, 1000, 100)] == [1, 1, 1]
    assert [len(s) for s in energy_slices(weeks, 1000, 400)] == [2, 1]
    assert energy_slices([], 10, 10) == []
