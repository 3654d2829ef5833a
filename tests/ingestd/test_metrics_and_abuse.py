"""Metrics, and the limits that keep token guessing slow without locking out the customer."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from ingestd.app import INGEST_PATH, SERVER_OPTIONS, create_app
from ingestd.keys import TOKENS
from ingestd.settings import Settings

from tests.fix_ingestd import PostBatch, gzip_json_headers
from tests.fix_pg import wait_for
from tests.samples import encode, measurements, site


async def test_metrics_count_batches_rows_and_refusals(
    post_batch: PostBatch, customer_token: str, ingestd_client: TestClient[Any, Any]
) -> None:
    """/metrics counts requests by type and status, rows by outcome, latency, pool and admission
    state and the event loop's lag — and never shows the token."""
    rows = measurements(10)
    rows[3]["v1"] = "bad"
    await post_batch(customer_token, "measurements", rows)
    await post_batch(customer_token, "measurements", rows)
    await post_batch("flt_" + "x" * 43, "sites", [site(1)])
    await post_batch(customer_token, "nonsense", [])
    resp = await ingestd_client.get("/metrics")
    assert resp.status == 200
    text = await resp.text()
    assert 'fleet_ingest_requests_total{batch_type="measurements",status="200"} 2.0' in text
    assert 'fleet_ingest_requests_total{batch_type="sites",status="401"} 1.0' in text
    assert 'fleet_ingest_requests_total{batch_type="invalid",status="400"} 1.0' in text
    assert 'fleet_ingest_rows_total{batch_type="measurements",outcome="accepted"} 9.0' in text
    assert 'fleet_ingest_rows_total{batch_type="measurements",outcome="duplicate"} 9.0' in text
    assert 'fleet_ingest_rows_total{batch_type="measurements",outcome="rejected"} 2.0' in text
    assert "fleet_ingest_request_duration_seconds_bucket" in text
    assert 'fleet_ingest_db_pool_connections{state="idle"}' in text
    assert "fleet_ingest_db_pool_waiting_requests 0.0" in text
    assert "fleet_ingest_admission_waiting 0.0" in text
    assert 'fleet_ingest_admission_refusals_total{reason="line_full"} 0.0' in text
    assert 'fleet_ingest_event_loop_lag_seconds_bucket{le="0.1"}' in text
    assert "fleet_ingest_auth_failures_total 1.0" in text
    assert customer_token not in text
    assert customer_token[4:20] not in text


@pytest.fixture
async def guarded_client(aiohttp_client: Any, ingestd_settings: Settings) -> TestClient[Any, Any]:
    """ingestd allowing 3 failed authentications per address, refilling at 1 per minute."""
    settings = replace(ingestd_settings, auth_failures_per_min=1.0, auth_failure_burst=3)
    server = TestServer(create_app(settings))
    await server.start_server(**SERVER_OPTIONS)
    client: TestClient[Any, Any] = await aiohttp_client(server)
    return client


async def test_token_guessing_is_slowed_but_the_customer_keeps_pushing(
    guarded_client: TestClient[Any, Any], customer_token: str, central_db: str
) -> None:
    """After 3 failed tokens from one address, further guesses get 429 with Retry-After;
    the real customer's token, already good, still works from the same address."""
    from ingestd.customers import add_customer

    body = encode([site(1)])
    assert (
        await guarded_client.post(INGEST_PATH, data=body, headers=gzip_json_headers(customer_token))
    ).status == 200
    statuses = []
    for n in range(6):
        resp = await guarded_client.post(
            INGEST_PATH, data=body, headers=gzip_json_headers(f"flt_guess{n:040d}")
        )
        statuses.append(resp.status)
        if resp.status == 429:
            assert int(resp.headers["Retry-After"]) >= 1
    assert statuses[:3] == [401, 401, 401]
    assert set(statuses[3:]) == {429}
    assert (
        await guarded_client.post(INGEST_PATH, data=body, headers=gzip_json_headers(customer_token))
    ).status == 200
    # A token never seen working waits out the budget like any guess, even if it is valid.
    fresh = add_customer(central_db, "DEV0042")
    assert (
        await guarded_client.post(INGEST_PATH, data=body, headers=gzip_json_headers(fresh))
    ).status == 429


async def test_revoked_token_loses_its_pass(
    guarded_client: TestClient[Any, Any], customer_token: str, central_db: str
) -> None:
    """A token that was good and is then revoked gets 401, and no longer bypasses the address budget."""
    from ingestd.customers import revoke_tokens

    body = encode([site(1)])
    assert (
        await guarded_client.post(INGEST_PATH, data=body, headers=gzip_json_headers(customer_token))
    ).status == 200
    cache = guarded_client.app[TOKENS]
    before = cache.generation
    revoke_tokens(central_db, "DEV0001")
    await wait_for(lambda: cache.generation != before, timeout_s=10, what="the notification")
    statuses = [
        (
            await guarded_client.post(
                INGEST_PATH, data=body, headers=gzip_json_headers(customer_token)
            )
        ).status
        for _ in range(5)
    ]
    assert statuses[:3] == [401, 401, 401]
    assert set(statuses[3:]) == {429}
