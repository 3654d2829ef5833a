"""Site and customer totals, peak demand and bad parameters of the billing answers, on both paths.

Sites, devices and samples go in through the real HTTP ingest path; the answers come from the
read API (validated against the OpenAPI document) after one housekeeping cycle, and are checked
against the slow reference computed from the raw rows (tests/ingestd/energy_reference.py).
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

import pytest
from aiohttp.test_utils import TestClient
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st
from ingestd.handlers.billing import SPLIT_MIN_DEVICES, TOTAL_CSV_FIELDS
from ingestd.settings import Settings

from tests.fix_ingestd import PostBatch, ThreadedIngestd, function_calls, pooled_client
from tests.ingestd import energy_reference as ref
from tests.ingestd.test_energy import ADMIN, AUTH, _ingest, _reference_samples
from tests.ingestd.test_storage import _cycle
from tests.openapi_check import assert_matches
from tests.samples import device, measurement, site


@pytest.fixture
def central_db(storage_db: str) -> str:
    """This module's central database: each storage path in turn."""
    return storage_db


@pytest.fixture
def ingestd_settings(ingestd_settings: Settings) -> Settings:
    """The test ingestd, with the read API on."""
    return replace(ingestd_settings, admin_token=ADMIN)


HOUR = timedelta(hours=1)
PREFIX = "/api/fleet/customers/DEV0001"
SITE_ENERGY = "/api/fleet/customers/{code}/sites/{site_id}/energy"
CUSTOMER_ENERGY = "/api/fleet/customers/{code}/energy"
DEVICE_DEMAND = "/api/fleet/customers/{code}/devices/{device_id}/demand"
SITE_DEMAND = "/api/fleet/customers/{code}/sites/{site_id}/demand"
KOLKATA = "Asia/Kolkata"


async def _fetch(
    client: TestClient[Any, Any], template: str, path: str, params: dict[str, str], status: int
) -> dict[str, Any]:
    resp = await client.get(path, params=params, headers=AUTH)
    body: dict[str, Any] = await resp.json()
    assert resp.status == status, body
    assert_matches(template, "get", status, body)
    return body


def _stepping(device_id: int, start: datetime, end: datetime, seed: int) -> list[dict[str, Any]]:
    """A meter whose power jumps every sample (uneven 1-9 minute spacing), one register reset."""
    rnd = random.Random(seed)
    t, register, rows = start, rnd.uniform(0, 1e4), []
    while t < end:
        rows.append(measurement(device_id, t, p_total=0.0, energy_imp_kwh=register,
                                energy_exp_kwh=register / 7))  # fmt: skip
        step = timedelta(seconds=rnd.randrange(60, 540))
        kw = rnd.choice([0.0, 5.0, 60.0, 300.0])
        register = rnd.uniform(0, 5) if rnd.random() < 0.002 else register + kw * (step / HOUR)
        t += step
    return rows


async def _setup_sites(post_batch: PostBatch, token: str) -> None:
    """Site 1 in Kolkata with devices 1-3, site 2 in Amsterdam with device 4."""
    for kind, items in (
        ("sites", [site(1, timezone=KOLKATA), site(2, timezone="Europe/Amsterdam")]),
        ("devices", [device(1, 1), device(2, 1), device(3, 1), device(4, 2)]),
    ):
        resp = await post_batch(token, kind, items)
        assert resp.status == 200, await resp.json()


async def test_a_site_month_is_the_sum_of_its_devices(
    post_batch: PostBatch,
    customer_token: str,
    ingestd_client: TestClient[Any, Any],
    central_db: str,
    ingestd_settings: Settings,
) -> None:
    """A Kolkata site's calendar months equal the sum over its devices of the register's increase
    between the local midnights of the 1st (the reference from the raw rows, to 1e-9), and the sum
    of its local days and of its local hours; a device without samples in a month is counted
    missing there; CSV has the same rows."""
    await _setup_sites(post_batch, customer_token)
    may31 = ref.local_midnight(date(2026, 5, 31), KOLKATA)
    rows = _stepping(1, may31 - 20 * HOUR, may31 + 50 * HOUR, 1)
    rows += _stepping(2, may31 + 3 * HOUR, may31 + 40 * HOUR, 2)
    rows += _stepping(3, may31 - 30 * HOUR, may31 + 10 * HOUR, 3)  # ends on May 31
    rows += _stepping(4, may31, may31 + 40 * HOUR, 4)  # another site
    await _ingest(post_batch, customer_token, rows)
    await _cycle(ingestd_settings)
    path = SITE_ENERGY.format(code="DEV0001", site_id=1)
    months = await _fetch(ingestd_client, SITE_ENERGY, path,
                          {"resolution": "month", "from": "2026-05", "to": "2026-07"}, 200)  # fmt: skip
    assert (months["timezone"], months["timezone_source"], months["devices"]) == (
        KOLKATA, "site", [1, 2, 3],
    )  # fmt: skip
    assert [r["period"] for r in months["rows"]] == ["2026-05", "2026-06"]
    samples = {d: _reference_samples(central_db, d) for d in (1, 2, 3)}
    edges = [ref.local_midnight(date(2026, m, 1), KOLKATA) for m in (5, 6, 7)]
    for row, start, end in zip(months["rows"], edges, edges[1:], strict=False):
        assert datetime.fromisoformat(row["start"]) == start
        for register in ("energy_imp_kwh", "energy_exp_kwh"):
            per_device = [ref.energy_between(samples[d], register, start, end) for d in samples]
            want = sum(e for e in per_device if e is not None)
            assert math.isclose(row[register], want, rel_tol=1e-9), (row, want)
    assert [r["devices_missing"] for r in months["rows"]] == [0, 1]

    days = await _fetch(ingestd_client, SITE_ENERGY, path,
                        {"resolution": "day", "from": "2026-05-29", "to": "2026-06-04"}, 200)  # fmt: skip
    by_month: dict[str, float] = {}
    for row in days["rows"]:
        by_month[row["period"][:7]] = by_month.get(row["period"][:7], 0.0) + (
            row["energy_imp_kwh"] or 0.0
        )
    for row in months["rows"]:
        assert math.isclose(by_month[row["period"]], row["energy_imp_kwh"], rel_tol=1e-9)

    hours = await _fetch(ingestd_client, SITE_ENERGY, path,
                         {"resolution": "hour", "from": "2026-05-31", "to": "2026-06-01"}, 200)  # fmt: skip
    assert len(hours["rows"]) == 24
    assert hours["rows"][0]["period"] == "2026-05-31T00:00"
    assert datetime.fromisoformat(hours["rows"][0]["start"]) == may31  # 18:30 UTC
    may31_row = next(r for r in days["rows"] if r["period"] == "2026-05-31")
    total = sum(r["energy_imp_kwh"] or 0.0 for r in hours["rows"])
    assert math.isclose(total, may31_row["energy_imp_kwh"], rel_tol=1e-9)

    resp = await ingestd_client.get(
        path,
        params={"resolution": "month", "from": "2026-05", "to": "2026-07"},
        headers={**AUTH, "Accept": "text/csv"},
    )
    lines = (await resp.text()).splitlines()
    assert lines[0].split(",") == list(TOTAL_CSV_FIELDS)
    assert [line.split(",")[0] for line in lines[1:]] == ["2026-05", "2026-06"]

    customer = CUSTOMER_ENERGY.format(code="DEV0001")
    mixed = await _fetch(ingestd_client, CUSTOMER_ENERGY, customer, {"resolution": "month"}, 400)
    assert mixed["parameter"] == "tz"
    everyone = await _fetch(ingestd_client, CUSTOMER_ENERGY, customer,
                            {"resolution": "month", "from": "2026-05", "to": "2026-07",
                             "tz": KOLKATA}, 200)  # fmt: skip
    assert everyone["devices"] == [1, 2, 3, 4]
    device4 = _reference_samples(central_db, 4)
    for row, start, end in zip(everyone["rows"], edges, edges[1:], strict=False):
        site_row = next(r for r in months["rows"] if r["period"] == row["period"])
        extra = ref.energy_between(device4, "energy_imp_kwh", start, end) or 0.0
        assert math.isclose(row["energy_imp_kwh"], site_row["energy_imp_kwh"] + extra, rel_tol=1e-9)


async def test_a_customer_total_on_two_connections(
    post_batch: PostBatch,
    customer_token: str,
    aiohttp_client: Any,
    central_db: str,
    ingestd_settings: Settings,
) -> None:
    """With a pooled connection idle, a customer's total of four devices is computed on two
    connections sharing one snapshot (`fleet.devices_energy` twice), and its days are the
    sum of the devices' reference energy (to 1e-9), devices without samples counted missing."""
    assert SPLIT_MIN_DEVICES <= 4
    await _setup_sites(post_batch, customer_token)
    may31 = ref.local_midnight(date(2026, 5, 31), KOLKATA)
    rows = []
    for d in (1, 2, 3, 4):
        rows += _stepping(d, may31 - 10 * HOUR + d * HOUR, may31 + 30 * HOUR - 5 * d * HOUR, d)
    await _ingest(post_batch, customer_token, rows)
    await _cycle(ingestd_settings)
    client = await pooled_client(aiohttp_client, ingestd_settings)
    path = CUSTOMER_ENERGY.format(code="DEV0001")
    params = {"resolution": "day", "from": "2026-05-29", "to": "2026-06-03", "tz": KOLKATA}
    got = await _fetch(client, CUSTOMER_ENERGY, path, params, 200)
    assert await function_calls(central_db, "devices_energy", 2) == 2  # half the devices each
    assert got["devices"] == [1, 2, 3, 4]
    samples = {d: _reference_samples(central_db, d) for d in (1, 2, 3, 4)}
    edges = [ref.local_midnight(date(2026, 5, 29) + timedelta(days=i), KOLKATA) for i in range(6)]
    for row, start, end in zip(got["rows"], edges[:-1], edges[1:], strict=True):
        per_device = [ref.energy_between(samples[d], "energy_imp_kwh", start, end) for d in samples]
        known = [e for e in per_device if e is not None]
        assert row["devices_missing"] == 4 - len(known), row
        if known:
            assert math.isclose(row["energy_imp_kwh"], sum(known), rel_tol=1e-9), (row, known)
        else:
            assert row["energy_imp_kwh"] is None


@pytest.mark.parametrize(
    ("template", "path", "params", "status", "parameter"),
    [
        (SITE_ENERGY, "/sites/9/energy", {}, 404, "site_id"),
        (SITE_ENERGY, "/sites/x/energy", {}, 400, "site_id"),
        (SITE_ENERGY, "/sites/1/energy", {"resolution": "month", "from": "2026-13"}, 400, "from"),
        (SITE_ENERGY, "/sites/1/energy", {"resolution": "week"}, 400, "resolution"),
        (SITE_ENERGY, "/sites/1/energy", {"from": "2020-01-01", "to": "2026-01-01"}, 400, "from"),
        (
            SITE_ENERGY,
            "/sites/1/energy",
            {"resolution": "month", "from": "2020-01", "to": "2026-01"},
            400,
            "from",
        ),
        (SITE_ENERGY, "/sites/1/energy", {"tz": "Mars/Olympus_Mons"}, 400, "tz"),
        (SITE_ENERGY, "/sites/1/energy", {"from": "2026-06-02", "to": "2026-06-01"}, 400, "from"),
        (SITE_DEMAND, "/sites/1/demand", {"minutes": "20"}, 400, "minutes"),
        (SITE_DEMAND, "/sites/1/demand", {"period": "year"}, 400, "period"),
        (DEVICE_DEMAND, "/devices/1/demand", {"period": "day", "from": "2026-02-30"}, 400, "from"),
        (DEVICE_DEMAND, "/devices/-1/demand", {}, 400, "device_id"),
        (CUSTOMER_ENERGY, "/energy", {"to": "June", "tz": "UTC"}, 400, "to"),
    ],
)
async def test_bad_parameters_are_named(
    post_batch: PostBatch,
    customer_token: str,
    ingestd_client: TestClient[Any, Any],
    template: str,
    path: str,
    params: dict[str, str],
    status: int,
    parameter: str,
) -> None:
    """An unknown site, an impossible month or date, a range over the limits, an unknown zone, a
    demand interval not in 15/30/60: a 400/404 as documented that names the parameter."""
    await _setup_sites(post_batch, customer_token)
    body = await _fetch(ingestd_client, template, PREFIX + path, params, status)
    assert body["parameter"] == parameter, body


async def test_unknown_customer_is_named(ingestd_client: TestClient[Any, Any]) -> None:
    """An unknown customer code is a 404 naming `code`."""
    path = "/api/fleet/customers/NOPE/sites/1/demand"
    body = await _fetch(ingestd_client, SITE_DEMAND, path, {}, 404)
    assert body["parameter"] == "code"


async def test_a_demand_peak(
    post_batch: PostBatch, customer_token: str, ingestd_client: TestClient[Any, Any],
    ingestd_settings: Settings,
) -> None:  # fmt: skip
    """A 20 kW load sampled every minute, 300 kW from 14:05 to 14:20 local: the 15-minute peak is
    14:00-14:15, which holds 10 minutes of it (20 + 280 x 10/15 kW); the 60-minute peak is
    14:00-15:00 (20 + 280 x 15/60); the site's peak is its devices' summed register's, not the
    sum of their peaks, which fall at different times."""
    await _setup_sites(post_batch, customer_token)
    midnight = ref.local_midnight(date(2026, 6, 1), KOLKATA)
    rows, register = [], 100.0
    for minute in range(24 * 60 + 1):
        t = midnight + timedelta(minutes=minute)
        rows.append(measurement(1, t, energy_imp_kwh=register))
        kw = 300.0 if 14 * 60 + 5 <= minute < 14 * 60 + 20 else 20.0
        register += kw / 60
    # device 2 peaks at another time: 100 kW from 09:00 to 09:15, 0 otherwise
    rows += [
        measurement(2, midnight + timedelta(minutes=m),
                    energy_imp_kwh=100.0 * min(max(m - 540, 0), 15) / 60)
        for m in range(24 * 60 + 1)
    ]  # fmt: skip
    await _ingest(post_batch, customer_token, rows)
    await _cycle(ingestd_settings)
    params = {"period": "day", "from": "2026-06-01", "to": "2026-06-02"}
    path = DEVICE_DEMAND.format(code="DEV0001", device_id=1)
    (peak,) = (await _fetch(ingestd_client, DEVICE_DEMAND, path, params, 200))["rows"]
    assert datetime.fromisoformat(peak["interval_start"]) == midnight + timedelta(hours=14)
    assert peak["demand_kw"] == pytest.approx(20 + 280 * 10 / 15, rel=1e-9)
    (hourly,) = (await _fetch(ingestd_client, DEVICE_DEMAND, path, {**params, "minutes": "60"},
                              200))["rows"]  # fmt: skip
    assert hourly["demand_kw"] == pytest.approx(20 + 280 * 15 / 60, rel=1e-9)
    path = SITE_DEMAND.format(code="DEV0001", site_id=1)
    (site_peak,) = (await _fetch(ingestd_client, SITE_DEMAND, path, params, 200))["rows"]
    assert site_peak["demand_kw"] == pytest.approx(20 + 280 * 10 / 15, rel=1e-9)
    assert site_peak["devices_missing"] == 1  # device 3 sent nothing


@st.composite
def _demand_case(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "zone": draw(st.sampled_from(["UTC", KOLKATA, "Pacific/Chatham", "America/St_Johns"])),
        "minutes": draw(st.sampled_from([15, 30, 60])),
        "interval_s": draw(st.sampled_from([45, 120, 300, 700])),
        "hole": draw(st.tuples(st.floats(0, 1), st.floats(0, 0.2))),
        "seed": draw(st.integers(0, 2**32)),
    }


@settings(
    max_examples=5, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(case=_demand_case())
def test_peak_demand_matches_brute_force(
    threaded_ingestd: ThreadedIngestd, customer_token: str, central_db: str, case: dict[str, Any]
) -> None:
    """Random meters (power changing every sample, a hole) on two devices of a site: each day's
    peak demand of a device and of the site (summed register) equals the highest demand over
    every fixed interval computed by brute force from the raw rows, to 1e-9, and the interval the
    answer names has that demand."""
    note(repr(case))
    threaded_ingestd.call(_clear(central_db))
    zone, day = case["zone"], date(2026, 6, 1)
    status, body = threaded_ingestd.post(customer_token, "sites", [site(1, timezone=zone)])
    assert status == 200, body
    status, body = threaded_ingestd.post(customer_token, "devices", [device(1, 1), device(2, 1)])
    assert status == 200, body
    rnd = random.Random(case["seed"])
    start = ref.local_midnight(day, zone) - 3 * HOUR
    hole_at = start + timedelta(hours=30) * case["hole"][0]
    hole = (hole_at, hole_at + timedelta(hours=30) * case["hole"][1])
    for device_id in (1, 2):
        t, register, kw, rows = start, rnd.uniform(0, 1e4), 20.0, []
        while t < start + timedelta(hours=30):
            if not hole[0] <= t < hole[1]:
                rows.append(measurement(device_id, t, energy_imp_kwh=register))
            step = timedelta(seconds=case["interval_s"] * rnd.uniform(0.5, 1.5))
            kw = max(0.0, kw + rnd.uniform(-30, 30))
            register += kw * (step / HOUR)
            t += step
        status, body = threaded_ingestd.post(customer_token, "measurements", rows)
        assert status == 200, body
    threaded_ingestd.call(_cycle(threaded_ingestd.settings))
    samples = {d: _reference_samples(central_db, d) for d in (1, 2)}
    params = {"period": "day", "minutes": str(case["minutes"]), "from": str(day - timedelta(days=1)),
              "to": str(day + timedelta(days=2))}  # fmt: skip
    for path, devices in (
        (DEVICE_DEMAND.format(code="DEV0001", device_id=1), [samples[1]]),
        (SITE_DEMAND.format(code="DEV0001", site_id=1), [samples[1], samples[2]]),
    ):
        got = _get_json(threaded_ingestd, path, params)
        brute = ref.demands(devices, day - timedelta(days=1), day + timedelta(days=2), zone,
                            case["minutes"])  # fmt: skip
        assert [r["period"] for r in got["rows"]] == [
            str(day + timedelta(days=i)) for i in (-1, 0, 1)
        ]
        for row in got["rows"]:
            of_day = [(s, d) for p, s, d in brute if str(p) == row["period"]]
            known = [d for _, d in of_day if d is not None]
            if not known:
                assert row["demand_kw"] is None, row
                continue
            assert math.isclose(row["demand_kw"], max(known), rel_tol=1e-9, abs_tol=1e-9), row
            named = dict(of_day)[datetime.fromisoformat(row["interval_start"])]
            assert named is not None
            assert math.isclose(named, max(known), rel_tol=1e-9, abs_tol=1e-9), row


def _get_json(server: ThreadedIngestd, path: str, params: dict[str, str]) -> dict[str, Any]:
    url = f"{server.url}{path}?{urllib.parse.urlencode(params)}"
    request = urllib.request.Request(url, headers=AUTH)  # noqa: S310 - the test's loopback server
    with urllib.request.urlopen(request, timeout=60) as resp:  # noqa: S310
        body: dict[str, Any] = json.loads(resp.read())
    template = SITE_DEMAND if "/sites/" in path else DEVICE_DEMAND
    assert_matches(template, "get", 200, body)
    return body


async def _clear(dsn: str) -> None:
    """Forget the previous example's rows and what was made of them (both paths)."""
    from psycopg import AsyncConnection

    async with await AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute("TRUNCATE fleet.power_measurements_scaled, fleet.hourly_dirty")
        cur = await conn.execute("SELECT to_regclass('fleet.quarter_rollup') IS NOT NULL")
        row = await cur.fetchone()
        if row and row[0]:
            await conn.execute("TRUNCATE fleet.hourly_rollup, fleet.quarter_rollup")
        else:
            for view in ("hourly_per_device", "quarter_per_device"):
                await conn.execute(f"CALL refresh_continuous_aggregate('fleet.{view}', NULL, NULL)")
