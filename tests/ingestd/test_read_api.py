"""The operators' read API and the OpenAPI document, checked against real responses."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from ingestd.app import INGEST_PATH, SERVER_OPTIONS, create_app
from ingestd.openapi import OPENAPI_PATH, openapi_document
from ingestd.settings import Settings

from tests.openapi_check import assert_matches
from tests.samples import NOW, device, encode, measurement, site

ADMIN = "admin-" + "x" * 40
HOURLY = "/api/fleet/customers/{code}/devices/{device_id}/hourly"


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


async def test_meter_reset_reports_null_energy(
    admin_client: TestClient[Any, Any], customer_token: str
) -> None:
    """A register that goes down inside the hour (a meter reset) gives null energy and energy_reset true."""
    hour = (NOW - timedelta(hours=3)).replace(minute=0, second=0)
    rows = [
        measurement(4, hour + timedelta(minutes=m), energy_imp_kwh=e)
        for m, e in ((0, 5000.0), (30, 2.0), (50, 4.0))
    ]
    await _push(admin_client, customer_token, "measurements", rows)
    resp = await admin_client.get(HOURLY.format(code="DEV0001", device_id=4), headers=_admin())
    (row,) = (await resp.json())["rows"]
    assert row["energy_imp_kwh"] is None
    assert row["energy_reset"] is True


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
    template = HOURLY if "hourly" in path else "/api/fleet/customers/{code}/devices"
    assert_matches(template, "get", status, body)


@pytest.mark.parametrize(
    "path",
    [
        "/api/fleet/customers",
        "/api/fleet/customers/DEV0001/devices",
        HOURLY.format(code="DEV0001", device_id=1),
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
