"""Token lookups of many requests at once share one statement (ingestd.auth.TokenLookups)."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import psycopg
from aiohttp.test_utils import TestClient, TestServer
from fleetcore import generate_token
from ingestd.app import INGEST_PATH, SERVER_OPTIONS, create_app
from ingestd.customers import add_customer
from ingestd.keys import TOKEN_LOOKUPS
from ingestd.settings import Settings

from tests.fix_ingestd import gzip_json_headers
from tests.fix_pg import scalar, wait_for
from tests.samples import encode, site

LOCK_WAITERS = (
    "SELECT count(*) FROM pg_stat_activity"
    " WHERE wait_event_type = 'Lock' AND datname = current_database()"
)


async def test_a_fleets_first_batches_share_their_token_lookups(
    aiohttp_client: Any, ingestd_settings: Settings, central_db: str
) -> None:
    """The first batches of 30 customers arriving together while token lookups are held up past
    the pool deadline are all answered 200 — their lookups wait together for one statement on
    one connection, not for a pool connection each until the deadline (then 503) — and an
    unknown token among them gets its 401."""
    tokens = [add_customer(central_db, f"LK{i:03d}") for i in range(30)]
    settings = replace(ingestd_settings, pool_timeout_s=1.0, pool_max_size=4)
    server = TestServer(create_app(settings))
    await server.start_server(**SERVER_OPTIONS)
    client: TestClient[Any, Any] = await aiohttp_client(server)
    body = encode([site(1)])
    with psycopg.connect(central_db) as blocker:
        blocker.execute("LOCK TABLE fleet.customer_tokens IN ACCESS EXCLUSIVE MODE")
        posts = [
            asyncio.create_task(
                client.post(INGEST_PATH, data=body, headers=gzip_json_headers(token))
            )
            for token in [*tokens, generate_token()]
        ]
        await wait_for(lambda: bool(scalar(central_db, LOCK_WAITERS)), what="a blocked lookup")
        await asyncio.sleep(2 * settings.pool_timeout_s)  # held up past the pool deadline
        blocker.rollback()
    statuses = [(await post).status for post in posts]
    assert statuses == [200] * 30 + [401]
    assert client.app[TOKEN_LOOKUPS].statements <= 3
