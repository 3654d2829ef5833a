"""The operators' read API and the OpenAPI document, checked against real responses."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from ingestd.app import INGEST_PATH, SERVER_OPTIONS, create_app
from ingestd.openapi import OPENAPI_PATH, openapi_document
from ingestd.settings import Settings

from tests.openapi_check import assert_matches
from tests.samples import NOW, device, encode, iso, measurement, site

ADMIN = "admin-" + "x" * 40
HOURLY = "/api/fleet/customers/{code}/devices/{device_id}/hourly"
DAILY = "/api/fleet/customers/{code}/devices/{device_id}/daily"


@pytest.fixture
async def admin_client(aiohttp_client: Any, ingestd_settings: Settings) -> TestClient[Any, Any]:
    """ingestd with the read API enabled."""
    server = TestServer(create_app(replace(ingestd_settings, admin_token=ADMIN)))
    await server.start_server(**SERVER_OPTIONS)
    client: TestClient[Any, Any] = await aiohttp_client(server)
    return client


def _admin(token: str = ADMIN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def _push(
    client: TestClient[Any, Any], token: str, kind: str, items: list[Any]
) -> dict[str, Any]:
    headers = {
        "X-Customer-Token": token,
        "X-Batch-Type": kind,
        "Content-Type": "application/json",
        "Content-Encoding": "gzip",
    }
    resp = await client.post(INGEST_PATH, data=encode(items), headers=headers)
    body = await resp.json()
    assert resp.status == 200
    assert_matches(INGEST_PATH, "post", 200, body)
    return dict(body)


async def test_customers_list_with_health(
    admin_client: TestClient[Any, Any], customer_token: str, other_token: str
) -> None:
    """The customers list shows first/last seen, seconds since the last batch, and 24-hour counts."""
    bad = measurement(1, NOW)
    bad["v1"] = "oops"
    await _push(
        admin_client,
        customer_token,
        "measurements",
        [measurement(1, NOW - timedelta(minutes=m)) for m in range(5)] + [bad],
    )
    resp = await admin_client.get("/api/fleet/customers", headers=_admin())
    body = await resp.json()
    assert resp.status == 200
    assert_matches("/api/fleet/customers", "get", 200, body)
    by_code = {c["code"]: c for c in body["customers"]}
    assert by_code["DEV0001"]["rows_24h"] == 5
    assert by_code["DEV0001"]["rejected_24h"] == 1
    assert 0 <= by_code["DEV0001"]["seconds_since_last_batch"] < 60
    assert by_code["DEV0002"]["last_seen_at"] is None
    assert by_code["DEV0002"]["seconds_since_last_batch"] is None


async def test_devices_with_deleted_marked(
    admin_client: TestClient[Any, Any], customer_token: str
) -> None:
    """A customer's sites and devices are listed, the ones gone from the full set marked deleted."""
    await _push(admin_client, customer_token, "sites", [site(1), site(2)])
    await _push(admin_client, customer_token, "devices", [device(7, 1), device(8, 2)])
    await _push(admin_client, customer_token, "devices", [device(7, 1)])
    resp = await admin_client.get("/api/fleet/customers/DEV0001/devices", headers=_admin())
    body = await resp.json()
    assert_matches("/api/fleet/customers/{code}/devices", "get", 200, body)
    assert [(d["id"], d["deleted"]) for d in body["devices"]] == [(7, False), (8, True)]
    assert [s["id"] for s in body["sites"]] == [1, 2]


async def test_hourly_json_and_csv(admin_client: TestClient[Any, Any], customer_token: str) -> None:
    """Hourly rows come back as JSON by default and as CSV with Accept: text/csv, with the same numbers."""
    hour = (NOW - timedelta(hours=5)).replace(minute=0, second=0)
    rows = [
        measurement(3, hour + timedelta(minutes=m), p_total=float(m), energy_imp_kwh=100.0 + m)
        for m in (0, 30, 59)
    ]
    await _push(admin_client, customer_token, "measurements", rows)
    params = {
        "from": (hour - timedelta(hours=1)).isoformat(),
        "to": (hour + timedelta(hours=2)).isoformat(),
    }
    resp = await admin_client.get(
        HOURLY.format(code="DEV0001", device_id=3), params=params, headers=_admin()
    )
    body = await resp.json()
    assert resp.status == 200
    assert_matches(HOURLY, "get", 200, body)
    (row,) = body["rows"]
    assert row["samples"] == 3
    assert row["p_total_avg"] == pytest.approx(89 / 3)
    assert row["energy_imp_kwh"] == pytest.approx(59.0)
    assert row["energy_reset"] is False

    resp = await admin_client.get(
        HOURLY.format(code="DEV0001", device_id=3),
        params=params,
        headers={**_admin(), "Accept": "text/csv"},
    )
    assert resp.status == 200
    assert resp.content_type == "text/csv"
    records = list(csv.DictReader(io.StringIO(await resp.text())))
    assert len(records) == 1
    assert float(records[0]["energy_imp_kwh"]) == pytest.approx(59.0)
    assert records[0]["samples"] == "3"


async def test_meter_reset_is_counted_and_flagged(
    admin_client: TestClient[Any, Any], customer_token: str
) -> None:
    """A register that goes down inside the hour (a meter reset) counts the new value as the
    increase across the drop: energy 2 + 2, flagged energy_reset (it used to be null)."""
    hour = (NOW - timedelta(hours=3)).replace(minute=0, second=0)
    rows = [
        measurement(4, hour + timedelta(minutes=m), energy_imp_kwh=e)
        for m, e in ((0, 5000.0), (30, 2.0), (50, 4.0))
    ]
    await _push(admin_client, customer_token, "measurements", rows)
    resp = await admin_client.get(HOURLY.format(code="DEV0001", device_id=4), headers=_admin())
    (row,) = (await resp.json())["rows"]
    assert row["energy_imp_kwh"] == pytest.approx(4.0)
    assert row["energy_reset"] is True


async def test_daily_in_the_sites_time_zone_json_and_csv(
    admin_client: TestClient[Any, Any], customer_token: str
) -> None:
    """Days are cut at the site's local midnight (timezone_source "site"), or at ?tz=; the CSV has
    the same numbers."""
    await _push(admin_client, customer_token, "sites", [site(1, timezone="America/New_York")])
    await _push(admin_client, customer_token, "devices", [device(6, 1)])
    start = (NOW - timedelta(days=3)).replace(hour=0, minute=0, second=0)
    rows = [
        measurement(6, start + timedelta(minutes=30 * i), energy_imp_kwh=100.0 + i)
        for i in range(2 * 24 * 2)
    ]  # 2 kWh per hour for two days, from 00:00 UTC
    await _push(admin_client, customer_token, "measurements", rows)
    path = DAILY.format(code="DEV0001", device_id=6)
    first = start.date()
    params = {"from": str(first - timedelta(days=1)), "to": str(first + timedelta(days=2))}
    resp = await admin_client.get(path, params=params, headers=_admin())
    body = await resp.json()
    assert resp.status == 200, body
    assert_matches(DAILY, "get", 200, body)
    assert (body["timezone"], body["timezone_source"]) == ("America/New_York", "site")
    new_york = [(r["day"], r["day_start"][11:16], r["energy_imp_kwh"]) for r in body["rows"]]
    # 00:00 UTC is 19:00 the evening before in New York (EST in late November): the first local
    # day holds 5 hours of energy, the next a whole day, the last until 18:30.
    assert [d for d, _, _ in new_york] == [
        str(first - timedelta(days=1)),
        str(first),
        str(first + timedelta(days=1)),
    ]
    assert [(t, e) for _, t, e in new_york] == [
        ("05:00", pytest.approx(10.0)),
        ("05:00", pytest.approx(48.0)),
        ("05:00", pytest.approx(37.0)),
    ]

    resp = await admin_client.get(path, params={**params, "tz": "UTC"}, headers=_admin())
    body = await resp.json()
    assert (body["timezone"], body["timezone_source"]) == ("UTC", "parameter")
    assert [r["energy_imp_kwh"] for r in body["rows"]] == pytest.approx([48.0, 47.0])
    assert [r["hours"] for r in body["rows"]] == [24.0, 24.0]  # the day before has no samples

    resp = await admin_client.get(
        path, params={**params, "tz": "UTC"}, headers={**_admin(), "Accept": "text/csv"}
    )
    assert resp.content_type == "text/csv"
    records = list(csv.DictReader(io.StringIO(await resp.text())))
    assert [float(r["energy_imp_kwh"]) for r in records] == pytest.approx([48.0, 47.0])
    assert records[0]["energy_reset"] == "False"


async def test_daily_with_a_time_zone_the_database_does_not_know(
    admin_client: TestClient[Any, Any], customer_token: str
) -> None:
    """A site whose time zone is unknown gets a 400 that names the site and says to pass ?tz=; a
    device not sent yet gets its days in UTC, saying so."""
    await _push(admin_client, customer_token, "sites", [site(2, timezone="Mars/Olympus_Mons")])
    await _push(admin_client, customer_token, "devices", [device(8, 2)])
    resp = await admin_client.get(DAILY.format(code="DEV0001", device_id=8), headers=_admin())
    body = await resp.json()
    assert resp.status == 400
    assert body["error"] == "bad_site_timezone" and "site 2" in body["detail"]
    assert_matches(DAILY, "get", 400, body)
    resp = await admin_client.get(
        DAILY.format(code="DEV0001", device_id=8),
        params={"tz": "Europe/Amsterdam"},
        headers=_admin(),
    )
    assert resp.status == 200
    resp = await admin_client.get(DAILY.format(code="DEV0001", device_id=99), headers=_admin())
    body = await resp.json()
    assert (body["timezone"], body["timezone_source"], body["rows"]) == ("UTC", "default", [])


async def test_completeness_per_device(
    admin_client: TestClient[Any, Any], customer_token: str
) -> None:
    """Per device: the usual interval, samples received vs expected, coverage, the gaps longer than
    three intervals (a silent device's last gap is ongoing) and the last sample."""
    await _push(admin_client, customer_token, "devices", [device(1), device(2)])
    start = (NOW - timedelta(hours=6)).replace(minute=0, second=0)
    minutes = [m for m in range(0, 4 * 60) if not 60 <= m < 90]  # a 31-minute hole
    await _push(
        admin_client,
        customer_token,
        "measurements",
        [measurement(1, start + timedelta(minutes=m)) for m in minutes],
    )
    params = {"from": iso(start), "to": iso(start + timedelta(hours=4))}
    resp = await admin_client.get(
        "/api/fleet/customers/DEV0001/completeness", params=params, headers=_admin()
    )
    body = await resp.json()
    assert resp.status == 200, body
    assert_matches("/api/fleet/customers/{code}/completeness", "get", 200, body)
    one, two = body["devices"]
    assert (one["device_id"], one["usual_interval_s"], one["samples"]) == (1, 60.0, 210)
    assert one["expected_samples"] == pytest.approx(240.0)
    assert one["coverage"] == pytest.approx(210 / 240)
    assert [(g["from"], g["to"], g["ongoing"]) for g in one["gaps"]] == [
        (iso(start + timedelta(minutes=59)), iso(start + timedelta(minutes=90)), False)
    ]
    assert one["last_sample_at"] == iso(start + timedelta(minutes=239))
    assert (two["device_id"], two["samples"], two["usual_interval_s"], two["coverage"]) == (
        2,
        0,
        None,
        None,
    )

    resp = await admin_client.get(
        "/api/fleet/customers/DEV0001/completeness", params={"from": iso(start)}, headers=_admin()
    )
    (one, _) = (await resp.json())["devices"]
    assert one["gaps"][-1]["ongoing"] is True  # silent since start + 239 min


async def test_customers_list_counts_stale_devices(
    admin_client: TestClient[Any, Any], customer_token: str
) -> None:
    """The customers list counts the devices (not deleted) with no sample in the last
    INGESTD_STALE_DEVICE_MINUTES (15 by default)."""
    now = datetime.now(UTC).replace(microsecond=0)  # not NOW: the suite may run for longer
    await _push(admin_client, customer_token, "devices", [device(1), device(2), device(3)])
    await _push(
        admin_client,
        customer_token,
        "measurements",
        [measurement(1, now - timedelta(minutes=1)), measurement(2, now - timedelta(minutes=30))],
    )
    resp = await admin_client.get("/api/fleet/customers", headers=_admin())
    body = await resp.json()
    assert_matches("/api/fleet/customers", "get", 200, body)
    assert body["stale_after_minutes"] == 15
    (customer,) = [c for c in body["customers"] if c["code"] == "DEV0001"]
    assert (customer["devices"], customer["stale_devices"]) == (3, 2)


@pytest.mark.parametrize(
    ("path", "params", "status", "code"),
    [
        (HOURLY.format(code="DEV0001", device_id="abc"), {}, 400, "bad_parameter"),
        (HOURLY.format(code="DEV0001", device_id="1"), {"from": "yesterday"}, 400, "bad_parameter"),
        (
            HOURLY.format(code="DEV0001", device_id="1"),
            {"from": "2026-01-01T00:00:00"},
            400,
            "bad_parameter",
        ),
        (
            HOURLY.format(code="DEV0001", device_id="1"),
            {"from": "2026-02-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"},
            400,
            "bad_parameter",
        ),
        (
            HOURLY.format(code="DEV0001", device_id="1"),
            {"from": "2025-01-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"},
            400,
            "range_too_large",
        ),
        (HOURLY.format(code="NOPE", device_id="1"), {}, 404, "not_found"),
        (DAILY.format(code="DEV0001", device_id="1"), {"from": "2026-1-1"}, 400, "bad_parameter"),
        (DAILY.format(code="DEV0001", device_id="1"), {"tz": "Nowhere/Town"}, 400, "bad_parameter"),
        (
            DAILY.format(code="DEV0001", device_id="1"),
            {"from": "2026-02-01", "to": "2026-02-01"},
            400,
            "bad_parameter",
        ),
        (
            DAILY.format(code="DEV0001", device_id="1"),
            {"from": "2025-01-01", "to": "2026-01-03"},
            400,
            "range_too_large",
        ),
        (DAILY.format(code="NOPE", device_id="1"), {}, 404, "not_found"),
        (
            "/api/fleet/customers/DEV0001/completeness",
            {"from": "2025-01-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"},
            400,
            "range_too_large",
        ),
        ("/api/fleet/customers/NOPE/devices", {}, 404, "not_found"),
    ],
)
async def test_bad_parameters_are_clear_4xx(
    admin_client: TestClient[Any, Any],
    customer_token: str,
    path: str,
    params: dict[str, str],
    status: int,
    code: str,
) -> None:
    """Bad ids, times, ranges and unknown customers are 4xx with a named error."""
    resp = await admin_client.get(path, params=params, headers=_admin())
    assert resp.status == status
    body = await resp.json()
    assert body["error"] == code
    template = (
        HOURLY
        if path.endswith("hourly")
        else DAILY
        if path.endswith("daily")
        else "/api/fleet/customers/{code}/completeness"
        if path.endswith("completeness")
        else "/api/fleet/customers/{code}/devices"
    )
    assert_matches(template, "get", status, body)


@pytest.mark.parametrize(
    "path",
    [
        "/api/fleet/customers",
        "/api/fleet/customers/DEV0001/devices",
        HOURLY.format(code="DEV0001", device_id=1),
        DAILY.format(code="DEV0001", device_id=1),
        "/api/fleet/customers/DEV0001/completeness",
    ],
)
async def test_read_api_needs_the_admin_token(
    admin_client: TestClient[Any, Any], customer_token: str, path: str
) -> None:
    """No token, a wrong token, or a customer's push token (in either header) all get 401."""
    for headers in (
        {},
        _admin("wrong" * 10),
        _admin(customer_token),
        {"X-Customer-Token": customer_token},
    ):
        resp = await admin_client.get(path, headers=headers)
        assert resp.status == 401
        assert await resp.json() == {"error": "unauthorized"}


async def test_read_api_is_off_without_admin_token(ingestd_client: TestClient[Any, Any]) -> None:
    """Without INGESTD_ADMIN_TOKEN the read API answers 403 admin_api_disabled."""
    resp = await ingestd_client.get("/api/fleet/customers", headers=_admin())
    assert resp.status == 403
    body = await resp.json()
    assert body["error"] == "admin_api_disabled"
    assert_matches("/api/fleet/customers", "get", 403, body)


async def test_served_document_is_the_one_in_the_repo(ingestd_client: TestClient[Any, Any]) -> None:
    """GET /api/fleet/openapi.json serves docs/openapi.json (regenerate with python -m ingestd.openapi)."""
    resp = await ingestd_client.get(OPENAPI_PATH)
    assert resp.status == 200
    served = await resp.json()
    in_repo = json.loads((Path(__file__).parents[2] / "docs" / "openapi.json").read_text())
    assert served == in_repo == json.loads(json.dumps(openapi_document()))
    assert served["openapi"].startswith("3.1")


async def test_error_responses_match_the_document(
    post_batch: Any, customer_token: str, ingestd_client: TestClient[Any, Any]
) -> None:
    """The ingest endpoint's error bodies (400, 401, 415) and health endpoints match the document."""
    resp = await post_batch(customer_token, "nope", [])
    assert_matches(INGEST_PATH, "post", 400, await resp.json())
    resp = await post_batch(None, "sites", [])
    assert_matches(INGEST_PATH, "post", 401, await resp.json())
    resp = await post_batch(customer_token, "sites", [], headers={"Content-Type": "text/plain"})
    assert_matches(INGEST_PATH, "post", 415, await resp.json())
    resp = await ingestd_client.get("/healthz")
    assert_matches("/healthz", "get", 200, await resp.json())
    resp = await ingestd_client.get("/readyz")
    assert_matches("/readyz", "get", resp.status, await resp.json())


def test_document_is_valid_openapi_31() -> None:
    """The document passes the OpenAPI 3.1 specification validator."""
    from openapi_spec_validator import validate

    validate(openapi_document())


async def test_failed_admin_tokens_spend_the_address_budget_and_are_logged(
    aiohttp_client: Any, ingestd_settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    """Wrong admin tokens count against the client address's failed-authentication budget (429
    past it) and are logged; the right token keeps working; every read-API request leaves one
    access-log line with client, path, status and duration."""
    settings = replace(
        ingestd_settings, admin_token=ADMIN, auth_failure_burst=3, auth_failures_per_min=0.01
    )
    server = TestServer(create_app(settings))
    await server.start_server(**SERVER_OPTIONS)
    client: TestClient[Any, Any] = await aiohttp_client(server)
    assert (await client.get("/api/fleet/customers", headers=_admin())).status == 200
    statuses = [
        (await client.get("/api/fleet/customers", headers=_admin("wrong" * 10))).status
        for _ in range(5)
    ]
    assert statuses[:3] == [401, 401, 401] and statuses[3:] == [429, 429]
    assert (await client.get("/api/fleet/customers", headers=_admin())).status == 200
    # The log goes to stdout, or to stderr after an in-process CLI test of the same session
    # configured logging for a one-shot command: read both.
    captured = capsys.readouterr()
    out = captured.out + captured.err
    assert out.count("admin_auth_failed") == 3
    assert out.count("read_api") == 7 and "duration_ms" in out
