"""Revocation with the token cache: two replicas, a revoke, and a lost notification connection."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import timedelta

import psycopg
import pytest
from aiohttp import ClientSession
from aiohttp.test_utils import TestServer
from ingestd.app import INGEST_PATH, SERVER_OPTIONS, create_app
from ingestd.customers import add_customer, revoke_tokens, rotate_token
from ingestd.keys import TOKENS
from ingestd.settings import Settings
from ingestd.tokencache import TokenCache

from tests.samples import encode, site


async def _replica(settings: Settings) -> TestServer:
    server = TestServer(create_app(settings))
    await server.start_server(**SERVER_OPTIONS)
    return server


async def _listening(cache: TokenCache, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cache.listening:
        assert time.monotonic() < deadline, "the token listener did not connect"
        await asyncio.sleep(0.02)


@pytest.fixture
async def replicas(ingestd_settings: Settings) -> AsyncIterator[list[TestServer]]:
    """Two ingestd replicas on one central database, each with its own token cache."""
    servers = [await _replica(ingestd_settings), await _replica(ingestd_settings)]
    try:
        for server in servers:
            await _listening(server.app[TOKENS])
        yield servers
    finally:
        for server in servers:
            await server.close()


async def _push(session: ClientSession, server: TestServer, token: str) -> int:
    async with session.post(
        server.make_url(INGEST_PATH),
        data=encode([site(1)]),
        headers={
            "X-Customer-Token": token,
            "X-Batch-Type": "sites",
            "Content-Type": "application/json",
            "Content-Encoding": "gzip",
        },
    ) as resp:
        await resp.read()
        return resp.status


async def _until_refused(session: ClientSession, server: TestServer, token: str) -> float:
    """Seconds until the replica refuses the token (bounded: fails past 2 s)."""
    started = time.monotonic()
    while (status := await _push(session, server, token)) == 200:
        assert time.monotonic() - started < 2.0, "revoked token still accepted after 2 s"
        await asyncio.sleep(0.01)
    assert status == 401
    return time.monotonic() - started


async def test_a_revoked_token_is_refused_by_every_replica_at_once(
    replicas: list[TestServer], central_db: str
) -> None:
    """Both replicas serve the token from their caches; after `customers revoke` both refuse it
    within the notification's trip (well under a second), not after the cache's TTL."""
    token = add_customer(central_db, "REVOKE1")
    async with ClientSession() as session:
        for server in replicas:
            assert await _push(session, server, token) == 200
            assert await _push(session, server, token) == 200
            assert server.app[TOKENS].hits >= 1  # the second push came from the cache
        assert await asyncio.to_thread(revoke_tokens, central_db, "REVOKE1") == 1
        waits = [await _until_refused(session, server, token) for server in replicas]
    assert max(waits) < 1.0


def _truncate_tokens(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("TRUNCATE fleet.customer_tokens CASCADE")


async def test_a_truncated_token_table_stops_every_cached_token_at_once(
    replicas: list[TestServer], central_db: str
) -> None:
    """TRUNCATE fires no row trigger; a statement-level one announces it, so cached tokens stop
    working on every replica within the notification's trip, not after the cache's TTL."""
    token = add_customer(central_db, "TRUNC1")
    async with ClientSession() as session:
        for server in replicas:
            assert await _push(session, server, token) == 200
            assert await _push(session, server, token) == 200
        # In a thread: the replicas run on this loop, and TRUNCATE waits for the transactions
        # they have open (housekeeping's), which never end while a blocking call holds the loop.
        await asyncio.to_thread(_truncate_tokens, central_db)
        waits = [await _until_refused(session, server, token) for server in replicas]
    assert max(waits) < 1.0


async def test_rotation_grace_ends_for_a_cached_token(
    replicas: list[TestServer], central_db: str
) -> None:
    """A rotation shortens the old token's life: the cached entry is dropped and re-read with its
    new expiry, and the new token works on both replicas at once."""
    old = add_customer(central_db, "ROTATE1")
    async with ClientSession() as session:
        assert await _push(session, replicas[0], old) == 200
        new = await asyncio.to_thread(rotate_token, central_db, "ROTATE1", timedelta(0))
        for server in replicas:
            assert await _push(session, server, new) == 200
            await _until_refused(session, server, old)


async def test_without_its_listen_connection_a_replica_looks_every_token_up(
    replicas: list[TestServer], central_db: str
) -> None:
    """When the notification connection is lost the cache is not trusted: a revocation made while
    it is down is honoured on the next push, from the database."""
    token = add_customer(central_db, "REVOKE2")
    server = replicas[0]
    cache = server.app[TOKENS]
    async with ClientSession() as session:
        assert await _push(session, server, token) == 200
        with psycopg.connect(central_db, autocommit=True) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = 'ingestd-tokens'"
            )
            deadline = time.monotonic() + 5.0
            while cache.listening and len(cache):
                assert time.monotonic() < deadline, "the lost listener went unnoticed"
                await asyncio.sleep(0.01)
            await asyncio.to_thread(revoke_tokens, central_db, "REVOKE2")
        assert await _push(session, server, token) == 401
        await _listening(cache)  # and it comes back on its own
        assert await _push(session, replicas[1], token) == 401
