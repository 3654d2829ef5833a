"""Energy per hour and per local day from the meter registers, on both storage paths.

Samples go in through the real HTTP ingest path; the answers come from the read API (hourly and
daily, validated against the OpenAPI document) after one housekeeping cycle, and are checked
against exact values (constant power) and against the slow reference computed from the raw rows
(tests/ingestd/energy_reference.py).
"""

from __future__ import annotations

import json
import math
import random
import urllib.parse
import urllib.request
from dataclasses import replace
from datetime import date, datetime, timedelta
from typing import Any

import psycopg
import pytest
from aiohttp.test_utils import TestClient
from hypothesis import HealthCheck, assume, given, note, settings
from hypothesis import strategies as st
from ingestd.handlers.energy import SPLIT_DAILY_DAYS, SPLIT_HOURLY
from ingestd.settings import Settings

from tests.fix_ingestd import PostBatch, ThreadedIngestd, function_calls, pooled_client
from tests.ingestd import energy_reference as ref
from tests.ingestd.test_storage import _cycle, _rows
from tests.openapi_check import assert_matches
from tests.samples import NOW, iso, measurement

HOUR = timedelta(hours=1)
ENERGY = ("energy_imp_kwh", "energy_exp_kwh", "energy_q_imp_kvarh", "energy_q_exp_kvarh")
ADMIN = "admin-" + "e" * 40
AUTH = {"Authorization": f"Bearer {ADMIN}"}
HOURLY_PATH = "/api/fleet/customers/{code}/devices/{device_id}/hourly"
DAILY_PATH = "/api/fleet/customers/{code}/devices/{device_id}/daily"


@pytest.fixture
def central_db(storage_db: str) -> str:
    """This module's central database: each storage path in turn."""
    return storage_db


class Api:
    """The read API's hourly and daily answers (admin token, checked against the OpenAPI document),
    times parsed back."""

    def __init__(self, client: TestClient[Any, Any]) -> None:
        self.client = client

    async def _get(self, path: str, params: dict[str, str]) -> list[dict[str, Any]]:
        resp = await self.client.get(path, params=params, headers=AUTH)
        body = await resp.json()
        assert resp.status == 200, body
        return _parsed(path, body)

    async def hourly(self, device: int, start: datetime, end: datetime) -> list[dict[str, Any]]:
        path = HOURLY_PATH.format(code="DEV0001", device_id=device)
        return await self._get(path, {"from": iso(start), "to": iso(end)})

    async def daily(self, device: int, first: date, end: date, tz: str) -> list[dict[str, Any]]:
        path = DAILY_PATH.format(code="DEV0001", device_id=device)
        return await self._get(path, {"from": str(first), "to": str(end), "tz": tz})


def _parsed(path: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    template = HOURLY_PATH if path.endswith("hourly") else DAILY_PATH
    assert_matches(template, "get", 200, body)
    rows: list[dict[str, Any]] = body["rows"]
    for row in rows:
        for key in ("bucket", "day_start", "day_end"):
            if key in row:
                row[key] = datetime.fromisoformat(row[key])
        if "day" in row:
            row["day"] = date.fromisoformat(row["day"])
    return rows


@pytest.fixture
def ingestd_settings(ingestd_settings: Settings) -> Settings:
    """The test ingestd, with the read API on."""
    return replace(ingestd_settings, admin_token=ADMIN)


@pytest.fixture
def api(ingestd_client: TestClient[Any, Any]) -> Api:
    """The read API of the test's ingestd."""
    return Api(ingestd_client)


def _get(server: ThreadedIngestd, path: str, params: dict[str, str]) -> list[dict[str, Any]]:
    url = f"{server.url}{path}?{urllib.parse.urlencode(params)}"
    request = urllib.request.Request(url, headers=AUTH)  # noqa: S310 - the test's loopback server
    with urllib.request.urlopen(request, timeout=60) as resp:  # noqa: S310
        return _parsed(path, json.loads(resp.read()))


def meter(
    device: int,
    start: datetime,
    every: timedelta,
    count: int,
    kw: float,
    *,
    kvar: float = 0.0,
    register: float = 1000.0,
    skip: range | None = None,
) -> list[dict[str, Any]]:
    """Samples of a meter drawing `kw` (and `kvar`) constantly, every `every` from `start`."""
    rows = []
    for i in range(count):
        if skip is not None and i in skip:
            continue
        hours = (every * i) / HOUR
        rows.append(
            measurement(
                device,
                start + every * i,
                p_total=kw,
                energy_imp_kwh=register + kw * hours,
                energy_exp_kwh=5.0,
                energy_q_imp_kvarh=100.0 + kvar * hours,
                energy_q_exp_kvarh=0.0,
            )
        )
    return rows


async def _ingest(post_batch: PostBatch, token: str, rows: list[dict[str, Any]]) -> None:
    for i in range(0, len(rows), 5000):
        resp = await post_batch(token, "measurements", rows[i : i + 5000])
        body = await resp.json()
        assert resp.status == 200, body
        assert body["rejected"] == 0, body


DAY = (NOW - timedelta(days=3)).replace(hour=0, minute=0, second=0)


# --- the table of issue 11: what today's main got wrong, with constant power ---------------------


async def test_quarter_hour_samples_give_the_full_hour(
    post_batch: PostBatch, customer_token: str, api: Api, ingestd_settings: Settings
) -> None:
    """15-minute samples on the quarter hours at 10 kW: 10 kWh every hour (last - first gave 7.5)."""
    await _ingest(post_batch, customer_token, meter(1, DAY, timedelta(minutes=15), 4 * 6 + 1, 10.0))
    await _cycle(ingestd_settings)
    rows = await api.hourly(1, DAY, DAY + 6 * HOUR)
    assert [r["bucket"] for r in rows] == [DAY + i * HOUR for i in range(6)]
    assert all(r["energy_imp_kwh"] == pytest.approx(10.0, rel=1e-12) for r in rows)
    assert all(r["samples"] == 4 and r["expected_samples"] == pytest.approx(4.0) for r in rows)
    assert not any(r["energy_reset"] or r["energy_estimated"] for r in rows)


async def test_minute_samples_off_the_hour(
    post_batch: PostBatch, customer_token: str, api: Api, ingestd_settings: Settings
) -> None:
    """1-minute samples at hh:mm:30 at 6 kW: 6 kWh every interior hour (last - first gave 5.9)."""
    start = DAY + timedelta(seconds=30)
    await _ingest(post_batch, customer_token, meter(1, start, timedelta(minutes=1), 4 * 60, 6.0))
    await _cycle(ingestd_settings)
    rows = await api.hourly(1, DAY, DAY + 4 * HOUR)
    energy = [r["energy_imp_kwh"] for r in rows]
    # No extrapolation: the first hour starts at the first sample (00:00:30), the last ends at
    # the last sample (03:59:30).
    assert energy == pytest.approx([6.0 * 59.5 / 60, 6.0, 6.0, 6.0 * 59.5 / 60], rel=1e-12)
    assert [r["expected_samples"] for r in rows] == pytest.approx([60.0] * 4)


async def test_a_two_hour_hole_loses_nothing(
    post_batch: PostBatch, customer_token: str, api: Api, ingestd_settings: Settings
) -> None:
    """5-minute samples at 12 kW with no samples for 2 hours: 96 kWh over 8 hours (65 before); the
    hours of the hole get rows with 0 samples, null averages and energy flagged estimated."""
    rows = meter(1, DAY, timedelta(minutes=5), 12 * 8 + 1, 12.0, skip=range(24, 48))
    await _ingest(post_batch, customer_token, rows)
    await _cycle(ingestd_settings)
    got = await api.hourly(1, DAY, DAY + 8 * HOUR)
    assert [r["bucket"] for r in got] == [DAY + i * HOUR for i in range(8)]
    assert [r["energy_imp_kwh"] for r in got] == pytest.approx([12.0] * 8, rel=1e-12)
    assert sum(r["energy_imp_kwh"] for r in got) == pytest.approx(96.0, rel=1e-12)
    assert [r["samples"] for r in got] == [12, 12, 0, 0, 12, 12, 12, 12]
    assert got[2]["p_total_avg"] is None and got[3]["v1_avg"] is None
    # 01:55 -> 04:00 rests on a 125-minute spacing: the hours it touches are estimates.
    assert [r["energy_estimated"] for r in got] == [
        False,
        True,
        True,
        True,
        False,
        False,
        False,
        False,
    ]


async def test_reset_inside_an_hour(
    post_batch: PostBatch, customer_token: str, api: Api, ingestd_settings: Settings
) -> None:
    """A register reset to 0 at 12:07 (15-minute samples, 10 kW): hour 12 has 8.833 kWh (the
    energy from 12:00 to the reset is lost with the old count), flagged energy_reset; was null."""
    noon = DAY + 12 * HOUR
    rows = []
    for i in range(-4, 9):
        t = noon + timedelta(minutes=15) * i
        since_reset = t - (noon + timedelta(minutes=7))
        value = (
            5000.0 + 2.5 * (i + 4) if since_reset < timedelta(0) else 10.0 * (since_reset / HOUR)
        )
        rows.append(measurement(1, t, energy_imp_kwh=value))
    await _ingest(post_batch, customer_token, rows)
    await _cycle(ingestd_settings)
    got = await api.hourly(1, noon - HOUR, noon + 2 * HOUR)
    assert [r["energy_imp_kwh"] for r in got] == pytest.approx(
        [10.0, 10 * 53 / 60, 10.0], rel=1e-12
    )
    assert [r["energy_reset"] for r in got] == [False, True, False]


async def test_all_four_registers(
    post_batch: PostBatch, customer_token: str, api: Api, ingestd_settings: Settings
) -> None:
    """All four registers are in every row: energy_q_imp_kvarh at 4 kvar gives 4 kvarh per hour;
    a register that never moves gives 0."""
    await _ingest(
        post_batch, customer_token, meter(1, DAY, timedelta(minutes=10), 6 * 3 + 1, 7.0, kvar=4.0)
    )
    await _cycle(ingestd_settings)
    for row in await api.hourly(1, DAY, DAY + 3 * HOUR):
        assert row["energy_imp_kwh"] == pytest.approx(7.0, rel=1e-12)
        assert row["energy_q_imp_kvarh"] == pytest.approx(4.0, rel=1e-12)
        assert row["energy_exp_kwh"] == 0.0
        assert row["energy_q_exp_kvarh"] == 0.0


async def test_the_worked_example_of_docs_energy(
    post_batch: PostBatch, customer_token: str, api: Api, ingestd_settings: Settings
) -> None:
    """The worked example of docs/ENERGY.md (a hole, a reset, no extrapolation) gives the numbers
    the document shows."""
    day = DAY + 10 * HOUR
    samples = [(40, 100.0), (55, 102.5), (70, 105.0), (85, 107.5), (175, 122.5), (190, 10 * 8 / 60),
               (205, 10 * 23 / 60)]  # fmt: skip
    rows = [measurement(1, day + timedelta(minutes=m), energy_imp_kwh=e) for m, e in samples]
    await _ingest(post_batch, customer_token, rows)
    await _cycle(ingestd_settings)
    got = await api.hourly(1, day - HOUR, day + 5 * HOUR)
    assert [r["bucket"] for r in got] == [day + i * HOUR for i in range(4)]
    assert [r["energy_imp_kwh"] for r in got] == pytest.approx(
        [10 / 3, 10.0, 9.0 + 1 / 6 + 4 / 9, 8 / 9 + 2.5], rel=1e-12
    )
    assert sum(r["energy_imp_kwh"] for r in got) == pytest.approx(22.5 + 10 * 23 / 60, rel=1e-12)
    assert [r["energy_estimated"] for r in got] == [False, True, True, False]
    assert [r["energy_reset"] for r in got] == [False, False, True, True]
    assert [r["expected_samples"] for r in got] == pytest.approx([4.0] * 4)


# --- edges, local days, odd devices -----------------------------------------------------------


async def test_reset_exactly_on_an_hour_boundary(
    post_batch: PostBatch, customer_token: str, api: Api, ingestd_settings: Settings
) -> None:
    """A register that reads 0 at 13:00 sharp: hour 12 carries the reset (12:45 -> 13:00 counts the
    new value, 0), hour 13 is a normal hour."""
    start = DAY + 12 * HOUR
    rows = meter(1, start, timedelta(minutes=15), 4, 8.0)  # 12:00 .. 12:45
    rows += meter(1, start + HOUR, timedelta(minutes=15), 5, 8.0, register=0.0)  # 13:00 .. 14:00
    await _ingest(post_batch, customer_token, rows)
    await _cycle(ingestd_settings)
    got = await api.hourly(1, start, start + 2 * HOUR)
    assert [r["energy_imp_kwh"] for r in got] == pytest.approx([6.0, 8.0], rel=1e-12)
    assert [r["energy_reset"] for r in got] == [True, False]


async def test_a_single_sample(
    post_batch: PostBatch, customer_token: str, api: Api, ingestd_settings: Settings
) -> None:
    """One sample: its hour has energy 0 (the register was seen, nothing moved), no usual interval."""
    await _ingest(post_batch, customer_token, [measurement(1, DAY + timedelta(minutes=20))])
    await _cycle(ingestd_settings)
    (row,) = await api.hourly(1, DAY - HOUR, DAY + 2 * HOUR)
    assert (row["bucket"], row["samples"], row["energy_imp_kwh"]) == (DAY, 1, 0.0)
    assert row["expected_samples"] is None
    assert not row["energy_estimated"]


async def test_two_samples_on_different_days(
    post_batch: PostBatch, customer_token: str, api: Api, ingestd_settings: Settings
) -> None:
    """Samples at 22:00 and 02:00 the next day (40 kWh apart): 10 kWh in each hour between and
    20 kWh in each UTC day; the sum over any range is the register's delta."""
    first = DAY + 22 * HOUR
    await _ingest(
        post_batch,
        customer_token,
        [
            measurement(1, first, energy_imp_kwh=100.0),
            measurement(1, first + 4 * HOUR, energy_imp_kwh=140.0),
        ],
    )
    await _cycle(ingestd_settings)
    hours = await api.hourly(1, first - 2 * HOUR, first + 6 * HOUR)
    assert [(r["bucket"], r["samples"]) for r in hours] == [
        (first, 1), (first + HOUR, 0), (first + 2 * HOUR, 0), (first + 3 * HOUR, 0), (first + 4 * HOUR, 1)
    ]  # fmt: skip
    assert [r["energy_imp_kwh"] for r in hours] == pytest.approx([10.0, 10.0, 10.0, 10.0, 0.0])
    days = await api.daily(1, DAY.date(), DAY.date() + timedelta(days=2), "UTC")
    assert [r["energy_imp_kwh"] for r in days] == pytest.approx([20.0, 20.0])
    assert [r["samples"] for r in days] == [1, 1]


@pytest.mark.parametrize(
    ("timezone", "day", "hours"),
    [
        ("Europe/Amsterdam", date(2026, 3, 29), 23),
        ("Europe/Amsterdam", date(2026, 10, 25), 25),
        ("America/New_York", date(2026, 3, 8), 23),
        ("America/New_York", date(2026, 11, 1), 25),
        ("Asia/Kolkata", date(2026, 6, 1), 24),
        ("Australia/Adelaide", date(2026, 4, 5), 25),
        ("Pacific/Chatham", date(2026, 9, 27), 23),
    ],
)
async def test_local_days_across_daylight_saving(
    post_batch: PostBatch,
    customer_token: str,
    api: Api,
    ingestd_settings: Settings,
    timezone: str,
    day: date,
    hours: int,
) -> None:
    """Days run from local midnight to local midnight: a DST day has 23 or 25 hours of energy (at
    10 kW: 230 or 250 kWh), each day equals the sum of its hours; Asia/Kolkata's days start at
    18:30 UTC, Pacific/Chatham's at 11:15 or 10:15 UTC, and count the samples after that."""
    start = ref.local_midnight(day - timedelta(days=1), timezone)
    await _ingest(
        post_batch, customer_token, meter(1, start - HOUR, timedelta(minutes=15), 4 * 80, 10.0)
    )
    await _cycle(ingestd_settings)
    got = await api.daily(1, day - timedelta(days=1), day + timedelta(days=2), timezone)
    assert [r["day"] for r in got] == [day - timedelta(days=1), day, day + timedelta(days=1)]
    target = got[1]
    assert target["day_start"] == ref.local_midnight(day, timezone)
    assert target["day_end"] - target["day_start"] == timedelta(hours=hours)
    assert target["energy_imp_kwh"] == pytest.approx(10.0 * hours, rel=1e-12)
    assert target["expected_samples"] == pytest.approx(4.0 * hours)
    assert target["samples"] == 4 * hours
    hourly = await api.hourly(1, target["day_start"], target["day_end"])
    if target["day_start"].minute == 0:
        assert len(hourly) == hours
        assert sum(r["energy_imp_kwh"] for r in hourly) == pytest.approx(
            target["energy_imp_kwh"], rel=1e-12
        )


async def test_long_ranges_are_read_in_halves_on_two_connections(
    post_batch: PostBatch,
    customer_token: str,
    aiohttp_client: Any,
    central_db: str,
    ingestd_settings: Settings,
) -> None:
    """With a pooled connection idle, 15 days of hours and 62 Kolkata days are read in two halves
    on two connections sharing one snapshot (`fleet.*_energy_at` twice each), and equal the reference
    from the raw rows: usual interval, `energy_estimated` and expected samples are the whole
    range's (30-minute samples, then 15-minute ones, a 3-hour hole in the second half)."""
    assert timedelta(days=15) >= SPLIT_HOURLY and SPLIT_DAILY_DAYS <= 62
    first, zone = date(2026, 3, 1), "Asia/Kolkata"
    start = ref.local_midnight(first, zone) + timedelta(minutes=7)
    rows = meter(1, start, timedelta(minutes=30), 34 * 48, 10.0)
    rows += meter(1, start + timedelta(days=34), timedelta(minutes=15), 29 * 96, 30.0,
                  register=1000.0 + 10.0 * 24 * 34, skip=range(1000, 1012))  # fmt: skip
    await _ingest(post_batch, customer_token, rows)
    await _cycle(ingestd_settings)
    api = Api(await pooled_client(aiohttp_client, ingestd_settings))
    lo = start + timedelta(days=27, minutes=23)
    hours = await api.hourly(1, lo, lo + timedelta(days=15))
    days = await api.daily(1, first, first + timedelta(days=62), zone)
    # two halves each: the `_at` functions twice, never through the whole range's function
    assert await function_calls(central_db, "hourly_energy_at", 2) == 2
    assert await function_calls(central_db, "daily_energy_at", 2) == 2
    assert await function_calls(central_db, "hourly_energy", 0) == 0
    assert await function_calls(central_db, "daily_energy", 0) == 0
    samples = _reference_samples(central_db, 1)
    _assert_matches(hours, ref.hourly(samples, lo, lo + timedelta(days=15)), "bucket")
    want = ref.daily(samples, first, first + timedelta(days=62), zone)
    _assert_matches(days, want, "day_start", averages=False)
    assert any(r["energy_estimated"] for r in days[31:])


async def test_a_register_sent_only_sometimes(
    post_batch: PostBatch, customer_token: str, api: Api, ingestd_settings: Settings
) -> None:
    """A register carried by every fourth sample only: its energy is interpolated between the samples
    that carry it (same totals), the hours are flagged estimated, the other registers are not affected."""
    rows = meter(1, DAY, timedelta(minutes=5), 12 * 4 + 1, 6.0, kvar=3.0)
    for i, row in enumerate(rows):
        if i % 4 != 1:
            row["energy_q_imp_kvarh"] = None
    await _ingest(post_batch, customer_token, rows)
    await _cycle(ingestd_settings)
    got = await api.hourly(1, DAY, DAY + 4 * HOUR)
    assert [r["energy_imp_kwh"] for r in got] == pytest.approx([6.0] * 4, rel=1e-12)
    # 00:05 .. 03:45 carry it: no extrapolation before the first or after the last.
    assert [r["energy_q_imp_kvarh"] for r in got] == pytest.approx(
        [2.75, 3.0, 3.0, 2.25], rel=1e-12
    )
    assert all(r["energy_estimated"] for r in got)


async def test_a_ten_year_old_backfill_is_exact_after_one_cycle(
    post_batch: PostBatch, customer_token: str, api: Api, ingestd_settings: Settings
) -> None:
    """After an old day was aggregated, a late sample in its hole changes the hours on both sides;
    one housekeeping cycle later the answers equal a from-scratch computation, 10 years back."""
    old = (NOW - timedelta(days=3650)).replace(hour=0, minute=0, second=0)
    rows = meter(1, old, timedelta(minutes=15), 4 * 6 + 1, 4.0)
    late = rows.pop(10)  # 02:30
    await _ingest(post_batch, customer_token, rows)
    await _cycle(ingestd_settings)
    before = await api.hourly(1, old, old + 6 * HOUR)
    assert [r["energy_estimated"] for r in before] == [False, False, True, False, False, False]
    await _ingest(post_batch, customer_token, [late])
    await _cycle(ingestd_settings)
    after = await api.hourly(1, old, old + 6 * HOUR)
    assert [r["energy_imp_kwh"] for r in after] == pytest.approx([4.0] * 6, rel=1e-12)
    assert not any(r["energy_estimated"] for r in after)
    assert after[2]["samples"] == 4


async def test_the_kolkata_day_of_docs_energy(
    post_batch: PostBatch, customer_token: str, api: Api, ingestd_settings: Settings
) -> None:
    """The Kolkata day of docs/ENERGY.md: 20-minute samples, 100 kW from 18:35 to 19:00 UTC; local
    midnight (18:30 UTC) takes 8.750 kWh of the 18:00 hour's 14.167 (the register interpolated
    between 18:20 and 18:40), not the 10.625 of a split in proportion to time."""
    day = date(2026, 6, 2)
    midnight = ref.local_midnight(day, "Asia/Kolkata")  # 2026-06-01T18:30Z
    rows, register, t = [], 1000.0, midnight - timedelta(hours=2, minutes=30)  # 16:00 UTC
    while t <= midnight + timedelta(hours=2, minutes=30):
        rows.append(measurement(1, t, energy_imp_kwh=register))
        for minute in range(20):
            moment = t + timedelta(minutes=minute)
            busy = midnight + timedelta(minutes=5) <= moment < midnight + timedelta(minutes=30)
            register += (100.0 if busy else 10.0) / 60
        t += timedelta(minutes=20)
    await _ingest(post_batch, customer_token, rows)
    await _cycle(ingestd_settings)
    got = await api.daily(1, day - timedelta(days=1), day + timedelta(days=1), "Asia/Kolkata")
    # 16:00 .. 18:00 at 10 kW, then 8.750 of the 18:00 hour: 3.333 to 18:20, half of 18:20 -> 18:40
    before = 20.0 + 10.0 / 3 + (2.5 + 100.0 / 12) / 2
    assert before == pytest.approx(28.75, rel=1e-12)
    total = rows[-1]["energy_imp_kwh"] - rows[0]["energy_imp_kwh"]
    assert [r["energy_imp_kwh"] for r in got] == pytest.approx([before, total - before], rel=1e-9)


# Zones whose offset is not a whole number of hours, with a daylight-saving day where they have one.
ODD_ZONE_DAYS = (
    ("Asia/Kolkata", date(2026, 6, 1)),
    ("Asia/Kathmandu", date(2026, 6, 1)),
    ("Asia/Tehran", date(2026, 3, 21)),
    ("Australia/Adelaide", date(2026, 4, 5)),
    ("Australia/Adelaide", date(2026, 10, 4)),
    ("America/St_Johns", date(2026, 3, 8)),
    ("America/St_Johns", date(2026, 11, 1)),
    ("Pacific/Chatham", date(2026, 4, 5)),
    ("Pacific/Chatham", date(2026, 9, 27)),
)


def _stepping_meter(device: int, midnight: datetime, seed: int) -> list[dict[str, Any]]:
    """A meter whose power jumps every few minutes (also in the minutes around `midnight`), sampled
    at an uneven 1-9 minute spacing from 30 hours before to 30 hours after, with one reset."""
    rnd = random.Random(seed)
    t, register, rows = midnight - 30 * HOUR, rnd.uniform(0, 1e4), []
    while t < midnight + 30 * HOUR:
        rows.append(measurement(device, t, p_total=0.0, energy_imp_kwh=register,
                                energy_q_imp_kvarh=register / 3))  # fmt: skip
        step = timedelta(seconds=rnd.randrange(60, 540))
        kw = rnd.choice([0.0, 3.0, 40.0, 250.0])
        register = rnd.uniform(0, 5) if rnd.random() < 0.002 else register + kw * (step / HOUR)
        t += step
    return rows


def test_local_days_exact_in_zones_with_odd_offsets(
    threaded_ingestd: ThreadedIngestd, customer_token: str, central_db: str
) -> None:
    """In zones whose offset is not a whole hour (Kolkata, Kathmandu, Tehran, Adelaide, St John's,
    Chatham), DST days included, with power jumping in the minutes around local midnight, each
    local day's energy and sample count equal the reference from the raw rows (the register
    interpolated at both midnights) to 1e-9, and so do the local days' sums."""
    for device, (zone, day) in enumerate(ODD_ZONE_DAYS, 1):
        rows = _stepping_meter(device, ref.local_midnight(day, zone), device)
        status, body = threaded_ingestd.post(customer_token, "measurements", rows)
        assert status == 200 and body["rejected"] == 0, body
    threaded_ingestd.call(_cycle(threaded_ingestd.settings))
    for device, (zone, day) in enumerate(ODD_ZONE_DAYS, 1):
        samples = _reference_samples(central_db, device)
        first, end = day - timedelta(days=2), day + timedelta(days=3)
        path = DAILY_PATH.format(code="DEV0001", device_id=device)
        got = _get(threaded_ingestd, path, {"from": str(first), "to": str(end), "tz": zone})
        want = ref.daily(samples, first, end, zone)
        _assert_matches(got, want, "day_start", averages=False)
        assert [r["day"] for r in got][1:4] == [
            day - timedelta(days=1),
            day,
            day + timedelta(days=1),
        ]


# --- property: random meters against the reference, on both paths -------------------------------


def _reference_samples(dsn: str, device: int) -> list[ref.Sample]:
    columns = (*ref.REGISTERS, *ref.AVERAGES)
    rows = _rows(
        dsn,
        f"SELECT time, {', '.join(columns)} FROM fleet.power_measurements WHERE device_id = %s",
        device,
    )
    return ref.from_rows(rows, columns)


def _close(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is b
    if isinstance(a, float) or isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)
    return bool(a == b)


def _assert_matches(
    got: list[dict[str, Any]], want: list[ref.Interval], start: str, *, averages: bool = True
) -> None:
    assert [r[start] for r in got] == [w.start for w in want]
    for row, expected in zip(got, want, strict=True):
        assert row["samples"] == expected.samples, (row, expected)
        for register in ENERGY:
            assert _close(row[register], expected.energy[register]), (register, row, expected)
        assert row["energy_reset"] == expected.energy_reset, (row, expected)
        assert row["energy_estimated"] == expected.energy_estimated, (row, expected)
        assert _close(row["expected_samples"], expected.expected_samples), (row, expected)
        if averages:
            assert _close(row["p_total_avg"], expected.averages["p_total"]), (row, expected)
            assert _close(row["p_total_max"], expected.maximum), (row, expected)


def _hourly_http(server: ThreadedIngestd, start: datetime, end: datetime) -> list[dict[str, Any]]:
    path = HOURLY_PATH.format(code="DEV0001", device_id=1)
    return _get(server, path, {"from": iso(start), "to": iso(end)})


ZONES = ("UTC", "Europe/Amsterdam", "America/New_York", "Asia/Kolkata", "Pacific/Chatham",
         "America/St_Johns")  # fmt: skip


@st.composite
def _meters(draw: st.DrawFn) -> dict[str, Any]:
    interval = draw(st.sampled_from([2, 7, 30, 60, 300, 600, 900]))
    count = draw(st.integers(min_value=1, max_value=min(1500, 3 * 86400 // interval)))
    return {
        "interval": interval,
        "count": count,
        "jitter": draw(st.sampled_from([0.0, 0.1, 0.4])),
        "holes": draw(st.lists(st.tuples(st.floats(0, 1), st.floats(0, 0.3)), max_size=3)),
        "resets": draw(st.lists(st.floats(0, 1), max_size=2)),
        "sometimes": draw(st.booleans()),
        "age": draw(
            st.sampled_from([timedelta(hours=2), timedelta(days=45), timedelta(days=3000)])
        ),
        "batches": draw(st.integers(min_value=1, max_value=5)),
        "seed": draw(st.integers(min_value=0, max_value=2**32)),
        "timezone": draw(st.sampled_from(ZONES)),
    }


def _generate(spec: dict[str, Any]) -> list[dict[str, Any]]:
    rnd = random.Random(spec["seed"])
    step = timedelta(seconds=spec["interval"])
    end = NOW.replace(second=0) - spec["age"]
    start = end - step * spec["count"]
    holes = [(start + (end - start) * a, (end - start) * w) for a, w in spec["holes"]]
    resets = {int(f * spec["count"]) for f in spec["resets"]}
    register, reactive, kw = rnd.uniform(0, 1e5), 50.0, rnd.uniform(0, 50)
    rows, previous = [], start
    for i in range(spec["count"]):
        t = start + step * i + step * rnd.uniform(-spec["jitter"], spec["jitter"]) * 0.5
        t = max(
            t.replace(microsecond=t.microsecond // 1000 * 1000),
            previous + timedelta(milliseconds=1),
        )
        hours, previous = (t - previous) / HOUR, t
        kw = max(0.0, kw + rnd.uniform(-5, 5))
        register = rnd.uniform(0, 10) if i in resets else register + kw * hours
        reactive += kw * 0.3 * hours
        if any(h0 <= t < h0 + w for h0, w in holes):
            continue
        rows.append(
            measurement(
                1,
                t,
                p_total=kw,
                energy_imp_kwh=register,
                energy_q_exp_kvarh=reactive
                if not spec["sometimes"] or rnd.random() < 0.3
                else None,
            )
        )
    return rows


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(spec=_meters(), refresh_between=st.booleans())
def test_energy_matches_the_reference(
    threaded_ingestd: ThreadedIngestd,
    customer_token: str,
    central_db: str,
    spec: dict[str, Any],
    refresh_between: bool,
) -> None:
    """Random meters (2 s .. 15 min, jitter, holes, resets, a register sent only sometimes, up to
    8 years old), delivered in shuffled batches with re-deliveries: after one housekeeping cycle
    every hourly and daily value equals the reference from the raw rows, and the sum over the
    range equals the register's reset-adjusted delta."""
    with psycopg.connect(central_db, autocommit=True) as conn:
        conn.execute("TRUNCATE fleet.power_measurements_scaled, fleet.hourly_dirty")
        if _rows(central_db, "SELECT to_regclass('fleet.hourly_rollup') IS NOT NULL")[0][0]:
            conn.execute("TRUNCATE fleet.hourly_rollup, fleet.quarter_rollup")
        else:
            conn.execute("CALL refresh_continuous_aggregate('fleet.hourly_per_device', NULL, NULL)")
            conn.execute(
                "CALL refresh_continuous_aggregate('fleet.quarter_per_device', NULL, NULL)"
            )
    note(f"spec={spec!r} refresh_between={refresh_between}")
    rows = _generate(spec)
    assume(rows)  # holes may swallow every sample: such a meter has nothing to compare
    rnd = random.Random(spec["seed"] + 1)
    batches = [rows[i :: spec["batches"]] for i in range(spec["batches"])]
    rnd.shuffle(batches)
    for number, batch in enumerate([*batches, *batches[:1]]):
        if batch:
            status, body = threaded_ingestd.post(customer_token, "measurements", batch)
            assert status == 200, body
        if refresh_between and number == 0:
            threaded_ingestd.call(_cycle(threaded_ingestd.settings))
    threaded_ingestd.call(_cycle(threaded_ingestd.settings))
    samples = _reference_samples(central_db, 1)
    first, last = min(s.time for s in samples), max(s.time for s in samples)

    lo, hi = ref.floor_hour(first) - HOUR, ref.floor_hour(last) + 2 * HOUR
    cut = lo + (hi - lo) * rnd.random()  # a range edge anywhere, holes included
    for start, end in ((lo, hi), (lo, max(cut, lo + HOUR)), (ref.floor_hour(cut), hi)):
        _assert_matches(
            _hourly_http(threaded_ingestd, start, end), ref.hourly(samples, start, end), "bucket"
        )
    hourly = _hourly_http(threaded_ingestd, lo, hi)
    for register in ("energy_imp_kwh", "energy_q_exp_kvarh"):
        total = sum(r[register] or 0.0 for r in hourly)
        assert math.isclose(
            total, ref.register_delta(samples, register), rel_tol=1e-9, abs_tol=1e-9
        )

    tz = spec["timezone"]
    first_day = first.astimezone(ref.ZoneInfo(tz)).date() - timedelta(days=1)
    end_day = last.astimezone(ref.ZoneInfo(tz)).date() + timedelta(days=2)
    path = DAILY_PATH.format(code="DEV0001", device_id=1)
    daily = _get(threaded_ingestd, path, {"from": str(first_day), "to": str(end_day), "tz": tz})
    whole_hours = ref.local_midnight(first_day, tz).minute == 0
    _assert_matches(
        daily, ref.daily(samples, first_day, end_day, tz), "day_start", averages=whole_hours
    )
    total = sum(r["energy_imp_kwh"] or 0.0 for r in daily)
    assert math.isclose(
        total, ref.register_delta(samples, "energy_imp_kwh"), rel_tol=1e-9, abs_tol=1e-9
    )
