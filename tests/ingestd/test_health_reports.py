"""Gateway health reports: stored per token, refused or flagged when bad, shown in the fleet view."""

from __future__ import annotations

import asyncio
import io
import time
from dataclasses import replace
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from aiohttp.test_utils import TestClient, TestServer
from fleetcore import HealthReport, ResourceHealth, encode_report, zstd_compress
from fleetcore.protocol import HEALTH_HEADER, HEALTH_PATH, INGEST_PATH
from ingestd.app import SERVER_OPTIONS, create_app
from ingestd.customers import rotate_token
from ingestd.fleetstate import HealthPolicy
from ingestd.settings import Settings

from tests.openapi_check import assert_matches

ADMIN = "admin-" + "x" * 40
GATEWAYS = "/api/fleet/gateways"


@pytest.fixture
def fleet_settings(ingestd_settings: Settings) -> Settings:
    return replace(
        ingestd_settings,
        admin_token=ADMIN,
        health=HealthPolicy(min_version="0.9.0", state_interval_s=0.2),
    )


@pytest.fixture
async def client(aiohttp_client: Any, fleet_settings: Settings) -> TestClient[Any, Any]:
    """ingestd with the read API on and the fleet-state task running every 0.2 s."""
    server = TestServer(create_app(fleet_settings))
    await server.start_server(**SERVER_OPTIONS)
    result: TestClient[Any, Any] = await aiohttp_client(server)
    return result


def report(**overrides: Any) -> HealthReport:
    values: dict[str, Any] = {
        "version": "1.2.0",
        "wire_format": "columnar",
        "started_at": int(time.time()) - 60,
        "push_interval_s": 1.0,
        "heartbeat_s": 60.0,
        "measurements": ResourceHealth(backlog_rows=27, lag_s=2.0, oldest_unshipped_age_s=3.0),
        "db_bytes": 50_000_000,
        "disk_free_bytes": 20 * 2**30,
        "clock_offset_s": 0.0,
        "sent_bytes": 12345,
        "host": "gw-1",
    }
    values.update(overrides)
    return HealthReport(**values)


async def send(
    client: TestClient[Any, Any],
    token: str,
    body: bytes,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, Any], Any]:
    all_headers = {"X-Customer-Token": token, "Content-Type": "application/json"}
    all_headers.update(headers or {})
    data = io.BytesIO(body) if len(body) > 1_000_000 else body
    resp = await client.post(HEALTH_PATH, data=data, headers=all_headers)
    return resp.status, await resp.json(), resp.headers


async def gateways(client: TestClient[Any, Any], query: str = "") -> dict[str, Any]:
    resp = await client.get(GATEWAYS + query, headers={"Authorization": f"Bearer {ADMIN}"})
    body = await resp.json()
    assert resp.status == 200, body
    assert_matches(GATEWAYS, "get", 200, body)
    return dict(body)


async def test_report_is_stored_and_shown(
    client: TestClient[Any, Any], customer_token: str
) -> None:
    """A zstd report is stored (answer and ingest answers advertise reports), and the fleet view
    shows the gateway with what it reported, state ok."""
    status, body, headers = await send(
        client,
        customer_token,
        zstd_compress(encode_report(report())),
        {"Content-Encoding": "zstd"},
    )
    assert (status, body) == (200, {"stored": True, "implausible": []})
    assert headers[HEALTH_HEADER] == "1"
    assert_matches(HEALTH_PATH, "post", 200, body)
    ingest = await client.post(INGEST_PATH, data=b"{}", headers={"X-Customer-Token": "bad"})
    assert ingest.headers[HEALTH_HEADER] == "1"
    view = await gateways(client)
    (gateway,) = view["gateways"]
    assert gateway["customer"] == "DEV0001"
    assert gateway["states"] == ["ok"]
    assert (gateway["backlog_rows"], gateway["lag_s"], gateway["host"]) == (27, 2.0, "gw-1")
    assert gateway["token_hint"] and customer_token not in str(view)
    assert view["counts"]["ok"] == 1


async def test_two_tokens_of_one_customer_are_two_gateways(
    client: TestClient[Any, Any], customer_token: str, central_db: str
) -> None:
    """Reports are keyed by token: two gateways of one customer are two rows, each its own."""
    second = rotate_token(central_db, "DEV0001", timedelta(days=1))
    await send(client, customer_token, encode_report(report(host="gw-a")))
    await send(client, second, encode_report(report(host="gw-b", quarantined_rows=3)))
    await send(client, customer_token, encode_report(report(host="gw-a", sent_bytes=99)))
    view = await gateways(client, "?customer=DEV0001")
    by_host = {g["host"]: g for g in view["gateways"]}
    assert set(by_host) == {"gw-a", "gw-b"}
    assert by_host["gw-a"]["reports"] == 2 and by_host["gw-a"]["sent_bytes"] == 99
    assert by_host["gw-b"]["states"] == ["quarantine"]


@pytest.mark.parametrize(
    ("body", "headers", "status", "error", "mentions"),
    [
        (b"not json", {}, 400, "invalid_report", "JSON"),
        (
            encode_report(report()).replace(b'"b":27', b'"b":-5'),
            {},
            400,
            "invalid_report",
            "$.m.b",
        ),
        (b'{"v":"' + b"9" * 10_000_000 + b'"}', {}, 413, "payload_too_large", "bytes"),
        (
            encode_report(report()),
            {"Content-Type": "text/plain"},
            415,
            "unsupported_media_type",
            "",
        ),
        (encode_report(report()), {"Content-Encoding": "zstd"}, 400, "invalid_zstd", ""),
        (b'{"v":"1.0"}', {}, 400, "invalid_report", "w"),
    ],
    ids=["not-json", "negative-backlog", "10MB-version", "text-plain", "bad-zstd", "missing-field"],
)
async def test_bad_reports_get_a_named_4xx(
    client: TestClient[Any, Any],
    customer_token: str,
    body: bytes,
    headers: dict[str, str],
    status: int,
    error: str,
    mentions: str,
) -> None:
    """A malformed, oversized or mistyped report gets a 4xx naming what is wrong; nothing stored."""
    got, answer, _ = await send(client, customer_token, body, headers)
    assert (got, answer["error"]) == (status, error)
    assert mentions in answer.get("detail", "")
    assert (await gateways(client))["gateways"] == []


async def test_implausible_fields_are_stored_flagged(
    client: TestClient[Any, Any], customer_token: str
) -> None:
    """A clock offset of years and a start in the future are stored as flagged (null), and the
    gateway shows as implausible with a skewed clock."""
    body = encode_report(
        report(clock_offset_s=5 * 365 * 86400.0, started_at=int(time.time()) + 30 * 86400)
    )
    status, answer, _ = await send(client, customer_token, body)
    assert (status, answer["implausible"]) == (200, ["clock_offset_s", "started_at"])
    (gateway,) = (await gateways(client))["gateways"]
    assert gateway["clock_offset_s"] is None and gateway["started_at"] is None
    assert gateway["implausible"] == ["clock_offset_s", "started_at"]
    assert gateway["states"] == ["skewed_clock", "implausible"]


async def test_states_and_filters(
    client: TestClient[Any, Any], customer_token: str, other_token: str, central_db: str
) -> None:
    """Each condition shows as its state and the `state` filter finds it: blocked, behind,
    quarantine, skewed clock, old version, failing, low disk, silent (no contact for twice the
    heartbeat it announced), retired (token revoked)."""
    second = rotate_token(central_db, "DEV0002", timedelta(days=1))
    await send(
        client,
        customer_token,
        encode_report(
            report(
                blocking_age_s=900.0,
                quarantined_rows=2,
                measurements=ResourceHealth(
                    lag_s=5000.0, consecutive_failures=4, last_error="unavailable"
                ),
            )
        ),
    )
    await send(
        client,
        other_token,
        encode_report(report(version="0.8.1", clock_offset_s=-600.0, disk_free_bytes=10)),
    )
    await send(client, second, encode_report(report(heartbeat_s=1.0)))
    deadline = time.monotonic() + 20  # a heartbeat of 1 s: silent once 2 s pass without contact
    for _ in range(400):
        if (await gateways(client))["counts"]["silent"] or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    view = await gateways(client)
    states = sorted(g["states"] for g in view["gateways"])
    assert states == [
        ["behind", "blocked", "failing", "quarantine"],
        ["silent"],
        ["skewed_clock", "disk_low", "old_version"],
    ]
    for state, customers in {
        "blocked": ["DEV0001"],
        "silent": ["DEV0002"],
        "skewed_clock,quarantine": ["DEV0001", "DEV0002"],
        "old_version": ["DEV0002"],
    }.items():
        found = (await gateways(client, f"?state={state}"))["gateways"]
        assert sorted(g["customer"] for g in found) == customers, state
    resp = await client.get(GATEWAYS + "?state=nope", headers={"Authorization": f"Bearer {ADMIN}"})
    assert resp.status == 400 and "nope" in (await resp.json())["detail"]
    rotate_token(central_db, "DEV0001", timedelta(0))  # the first gateway's token expires now
    view = await gateways(client)
    assert len(view["gateways"]) == 2 and view["counts"]["retired"] == 1
    assert len((await gateways(client, "?state=retired"))["gateways"]) == 1


async def test_history_is_spaced_and_the_fleet_figures_are_served(
    client: TestClient[Any, Any], customer_token: str, central_db: str
) -> None:
    """Reports in quick succession update the latest but add one history row; the centre's
    /metrics counts gateways by state and version, with no per-gateway label."""
    for n in range(5):
        await send(client, customer_token, encode_report(report(sent_bytes=n, quarantined_rows=1)))
    with psycopg.connect(central_db, autocommit=True) as conn:
        (kept,) = conn.execute("SELECT count(*) FROM fleet.gateway_reports").fetchone() or (0,)
    assert kept == 1
    deadline = time.monotonic() + 20
    text = ""
    while time.monotonic() < deadline:
        text = await (await client.get("/metrics")).text()
        if 'fleet_gateways{state="quarantine"} 1.0' in text:
            break
        await asyncio.sleep(0.1)
    assert 'fleet_gateways{state="quarantine"} 1.0' in text
    assert 'fleet_gateway_versions{version="1.2.0"} 1.0' in text
    assert "fleet_gateway_quarantined_rows 1.0" in text
    assert 'fleet_health_reports_total{outcome="stored"} 5.0' in text
    assert "DEV0001" not in text and "gw-1" not in text


async def test_a_customer_filter_no_code_can_match_is_a_400_naming_it(
    client: TestClient[Any, Any],
) -> None:
    """`?customer=` with a NUL or another control character is a 400 naming `customer` (it was a
    500 from PostgreSQL; schemathesis found it), not a query."""
    for bad in ("%00", "A%00B", "%7B%00%F4%88%99%8A", "%1F"):
        resp = await client.get(
            f"{GATEWAYS}?customer={bad}", headers={"Authorization": f"Bearer {ADMIN}"}
        )
        body = await resp.json()
        assert resp.status == 400 and body["parameter"] == "customer", body
    assert (await gateways(client, "?customer=NOSUCH"))["gateways"] == []
