"""Tenant isolation under every endpoint: a customer token writes only its own rows, reads
nothing, and never opens the operators' API; the admin token is not a push token."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from aiohttp.test_utils import TestClient, TestServer
from ingestd.app import INGEST_PATH, SERVER_OPTIONS, create_app
from ingestd.settings import Settings

from tests.chaos.figures import FIGURES
from tests.samples import NOW, device, encode, measurement, site

ADMIN_TOKEN = "isolation-admin-token-0123456789abcdef012345"
CLAIMS = {"customer_id": 2, "customer": "DEV0002", "customer_code": "DEV0002", "tenant": 2}


@pytest.fixture
async def client(aiohttp_client: Any, ingestd_settings: Settings) -> TestClient[Any, Any]:
    """ingestd with the read API on."""
    # Every endpoint is probed with wrong tokens many times: a budget that does not run out here
    # (the budget has its own tests in tests/ingestd/test_client_address.py).
    settings = replace(ingestd_settings, admin_token=ADMIN_TOKEN, auth_failure_burst=100_000)
    server = TestServer(create_app(settings))
    await server.start_server(**SERVER_OPTIONS)
    result: TestClient[Any, Any] = await aiohttp_client(server)
    return result


async def _push(client: TestClient[Any, Any], token: str, kind: str, items: list[Any]) -> int:
    headers = {
        "X-Customer-Token": token,
        "X-Batch-Type": kind,
        "Content-Type": "application/json",
        "Content-Encoding": "gzip",
    }
    resp = await client.post(INGEST_PATH, data=encode(items), headers=headers)
    FIGURES.bad_inputs += 1
    return resp.status


OWNERS = """
SELECT c.code, count(*) FILTER (WHERE {live})
FROM fleet.{table} AS t JOIN fleet.customers AS c ON c.id = t.customer_id
GROUP BY c.code
"""


def _owners(dsn: str) -> dict[str, dict[str, int]]:
    """Live rows per table per customer code."""
    out: dict[str, dict[str, int]] = {}
    with psycopg.connect(dsn) as conn:
        for table in ("sites", "devices", "power_measurements"):
            live = "true" if table == "power_measurements" else "t.deleted_at IS NULL"
            rows = conn.execute(OWNERS.format(live=live, table=table)).fetchall()
            out[table] = {code: int(n) for code, n in rows}
    return out


async def test_a_token_writes_only_its_own_rows_whatever_the_body_claims(
    client: TestClient[Any, Any], customer_token: str, other_token: str, central_db: str
) -> None:
    """Rows sent with customer A's token land under A even when they name customer B (ids,
    codes, B's device ids); B's rows, including its full sets, are untouched."""
    assert await _push(client, other_token, "sites", [site(1), site(2)]) == 200
    assert await _push(client, other_token, "devices", [device(7, 1)]) == 200
    when = NOW - timedelta(hours=1)
    assert await _push(client, other_token, "measurements", [measurement(7, when)]) == 200
    before = _owners(central_db)
    assert before["sites"] == {"DEV0002": 2}

    assert await _push(client, customer_token, "sites", [site(1, **CLAIMS)]) == 200
    assert await _push(client, customer_token, "devices", [device(7, 1, **CLAIMS)]) == 200
    claim = measurement(7, when, v1=1.0, **CLAIMS)
    assert await _push(client, customer_token, "measurements", [claim]) == 200
    assert await _push(client, customer_token, "sites", []) == 200  # A's empty full set
    after = _owners(central_db)
    assert after["sites"] == {"DEV0001": 0, "DEV0002": 2}, "A's empty set deletes only A's"
    assert after["devices"] == {"DEV0001": 1, "DEV0002": 1}
    assert after["power_measurements"] == {"DEV0001": 1, "DEV0002": 1}
    with psycopg.connect(central_db) as conn:
        values = dict(
            conn.execute(
                "SELECT c.code, m.v1 FROM fleet.power_measurements m "
                "JOIN fleet.customers c ON c.id = m.customer_id"
            ).fetchall()
        )
    assert values == {"DEV0001": 1.0, "DEV0002": 230.1}, "B's sample is not overwritten"


def _read_paths(client: TestClient[Any, Any]) -> list[str]:
    """Every GET route of the app behind the admin token (the read API's sub-apps: customers and
    the fleet view), with B's code, device and site filled in — a new endpoint is covered by
    itself."""
    paths = []
    for route in client.server.app.router.routes():  # the read API's sub-app routes included
        path = route.resource.canonical if route.resource else ""
        if route.method == "GET" and path.startswith(
            ("/api/fleet/customers", "/api/fleet/gateways")
        ):
            for name, value in (("{code}", "DEV0002"), ("{device_id}", "7"), ("{site_id}", "1")):
                path = path.replace(name, value)
            paths.append(path)
    assert not [p for p in paths if "{" in p], paths
    assert {"/api/fleet/customers", "/api/fleet/gateways"} <= set(paths), paths
    assert len(paths) >= 7, paths
    return paths


async def test_a_customer_token_reads_nothing(
    client: TestClient[Any, Any], customer_token: str, other_token: str
) -> None:
    """A customer token, sent as X-Customer-Token, as a Bearer token or both, gets 401 on every
    read endpoint (its own customer's included), with the same body each time."""
    paths = _read_paths(client)
    paths.append("/api/fleet/customers/DEV0001/devices")
    for path in paths:
        for headers in (
            {"X-Customer-Token": customer_token},
            {"Authorization": f"Bearer {customer_token}"},
            {"X-Customer-Token": customer_token, "Authorization": f"Bearer {customer_token}"},
            {"Authorization": f"bearer {other_token}"},
        ):
            resp = await client.get(path, headers=headers)
            FIGURES.bad_inputs += 1
            assert resp.status == 401, (path, headers.keys(), resp.status)
            assert await resp.json() == {"error": "unauthorized"}


async def test_admin_token_is_not_a_push_token(
    client: TestClient[Any, Any], customer_token: str, central_db: str
) -> None:
    """The admin token does not push: not as X-Customer-Token, nor as a Bearer beside none."""
    assert await _push(client, ADMIN_TOKEN, "sites", [site(1)]) == 401
    resp = await client.post(
        INGEST_PATH,
        data=encode([site(1)]),
        headers={
            "Authorization": f"Bearer {ADMIN_TOKEN}",
            "X-Batch-Type": "sites",
            "Content-Type": "application/json",
            "Content-Encoding": "gzip",
        },
    )
    assert resp.status == 401
    assert _owners(central_db)["sites"] == {}
    ok = await client.get(
        "/api/fleet/customers", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
    )
    assert ok.status == 200, "the admin token does open the read API"


async def test_metrics_and_openapi_name_no_customer(
    client: TestClient[Any, Any], customer_token: str
) -> None:
    """The unauthenticated endpoints (/metrics, /healthz, /readyz, the OpenAPI document) show
    neither a customer code nor a token after a customer pushed."""
    assert await _push(client, customer_token, "sites", [site(1)]) == 200
    for path in ("/metrics", "/healthz", "/readyz", "/api/fleet/openapi.json"):
        text = await (await client.get(path)).text()
        assert "DEV0001" not in text and customer_token not in text, path


async def test_hourly_checks_the_token_first(client: TestClient[Any, Any]) -> None:
    """Without the admin token the hourly endpoint answers 401 whatever its parameters."""
    resp = await client.get(
        "/api/fleet/customers/DEV0002/devices/7/hourly?from=2000-01-01T00:00:00Z&to=2000-01-01T00:00:00Z"
    )
    assert resp.status == 401
