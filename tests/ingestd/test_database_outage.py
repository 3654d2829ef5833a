"""ingestd while its database goes away and comes back."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from fleetdev.pgcluster import PgCluster, temporary_cluster
from ingestd.app import INGEST_PATH, SERVER_OPTIONS, create_app
from ingestd.customers import add_customer
from ingestd.housekeeping import housekeeping_cycle
from ingestd.keys import SETTINGS, STORAGE
from ingestd.migrate import apply_migrations
from ingestd.settings import Settings

from tests.fix_pg import migrate_central
from tests.samples import encode, measurements


@pytest.fixture
def own_cluster() -> Iterator[PgCluster]:
    """A cluster of this test's own, since the test stops it — hard, so with its commits made
    durable first (the throwaway clusters' `synchronous_commit=off` let an immediate stop lose
    the customer's token committed a moment before: the recovered database answered 401, once
    in a loaded CI run)."""
    with temporary_cluster(prefix="fleet-outage-", synchronous_commit="on") as cluster:
        yield cluster


async def test_database_down_gives_503_then_recovers_without_restart(
    own_cluster: PgCluster, aiohttp_client: Any
) -> None:
    """With the database stopped hard, ingest answers 503 + Retry-After and /readyz fails;
    once it is back, the same ingestd process stores batches again."""
    dsn = own_cluster.create_database("central")
    await asyncio.to_thread(migrate_central, dsn)
    token = add_customer(dsn, "DEV0001")
    settings = Settings(
        database_url=dsn, pool_timeout_s=1.0, connect_timeout_s=5.0, retry_after_s=9
    )
    server = TestServer(create_app(settings))
    await server.start_server(**SERVER_OPTIONS)
    client: TestClient[Any, Any] = await aiohttp_client(server)
    headers = {
        "X-Customer-Token": token,
        "X-Batch-Type": "measurements",
        "Content-Type": "application/json",
        "Content-Encoding": "gzip",
    }
    rows = measurements(100)
    assert (await client.post(INGEST_PATH, data=encode(rows[:50]), headers=headers)).status == 200

    own_cluster.stop("immediate")
    resp = await client.post(INGEST_PATH, data=encode(rows[50:]), headers=headers)
    assert resp.status == 503
    assert 9 <= int(resp.headers["Retry-After"]) <= 2 * 9 + 1  # spread so the herd returns apart
    assert (await resp.json())["error"] == "unavailable"
    assert (await client.get("/healthz")).status == 200
    assert await _readyz_until(client, "database unavailable") == 503

    own_cluster.start()
    deadline = time.monotonic() + 30
    status = 0
    while time.monotonic() < deadline:
        resp = await client.post(INGEST_PATH, data=encode(rows[50:]), headers=headers)
        status = resp.status
        if status == 200:
            assert (await resp.json())["accepted"] == 50
            break
        assert status == 503
    assert status == 200
    assert await _readyz_until(client, "ready") == 200


async def test_readyz_reports_pending_migrations(
    own_cluster: PgCluster, aiohttp_client: Any
) -> None:
    """/readyz is 503 naming the cause while the schema is not migrated or the storage not
    bootstrapped, and 200 once both are done (without restarting ingestd)."""
    dsn = own_cluster.create_database("empty")
    server = TestServer(create_app(Settings(database_url=dsn)))
    await server.start_server(**SERVER_OPTIONS)
    client: TestClient[Any, Any] = await aiohttp_client(server)
    assert await _readyz_until(client, "migrations not applied") == 503
    apply_migrations(dsn)
    assert await _readyz_until(client, "storage not bootstrapped") == 503
    await asyncio.to_thread(migrate_central, dsn)
    await housekeeping_round(client)
    assert await _readyz_until(client, "ready") == 200


async def _readyz_until(client: TestClient[Any, Any], expected: str) -> int:
    """/readyz's status once its body says `expected` (it answers from state refreshed in the
    background every READY_REFRESH_S; bounded wait)."""
    for _ in range(100):
        resp = await client.get("/readyz")
        body = await resp.json()
        if body.get("reason", body["status"]).startswith(expected):
            return resp.status
        await asyncio.sleep(0.1)
    raise AssertionError(f"/readyz never said {expected!r}: {body}")


async def housekeeping_round(client: TestClient[Any, Any]) -> None:
    """One housekeeping round of the running app (it notices a storage bootstrapped meanwhile)."""
    from psycopg import AsyncConnection

    state, settings = client.app[STORAGE], client.app[SETTINGS]
    async with await AsyncConnection.connect(settings.database_url, autocommit=True) as conn:
        await housekeeping_cycle(conn, state, settings)
