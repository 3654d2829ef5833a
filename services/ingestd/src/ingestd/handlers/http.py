"""What every handler shares: JSON answers, the errors that mean "database unavailable", and a
pooled connection within the pool deadline, and one whose reads all see one snapshot."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager, suppress
from typing import Any

import msgspec
import psycopg
from aiohttp import web
from psycopg import AsyncConnection
from psycopg_pool import PoolTimeout

from ingestd.client_address import budget_key, client_address
from ingestd.keys import POOL, SETTINGS
from ingestd.pooled import pooled_transaction
from ingestd.storage.snapshots import READ_SNAPSHOT, adopt_snapshot, export_snapshot

__all__ = [
    "DB_UNAVAILABLE",
    "READ_SNAPSHOT",
    "Handler",
    "budget_address",
    "connection",
    "json_answer",
    "snapshot",
    "spare_snapshot",
]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

DB_UNAVAILABLE = (psycopg.OperationalError, psycopg.InterfaceError, PoolTimeout)
"""Raised by a database that cannot be reached: the answer is 503 with Retry-After."""

_encode = msgspec.json.Encoder().encode


def json_answer(
    body: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=_encode(body), status=status, headers=headers, content_type="application/json"
    )


@asynccontextmanager
async def connection(request: web.Request) -> AsyncIterator[AsyncConnection[Any]]:
    """A pooled connection in a transaction (PoolTimeout past INGESTD_POOL_TIMEOUT_S); commits
    on success (`ingestd.pooled`: the pool's connections are in autocommit between uses)."""
    config = request.config_dict
    async with pooled_transaction(config[POOL], config[SETTINGS].pool_timeout_s) as conn:
        yield conn


@asynccontextmanager
async def snapshot(request: web.Request) -> AsyncIterator[AsyncConnection[Any]]:
    """A pooled connection in a read-only REPEATABLE READ transaction, for the read API.

    Not only for consistency between a handler's statements: TimescaleDB reads a continuous
    aggregate's watermark with `GetTransactionSnapshot()`, which under READ COMMITTED is a *new*
    snapshot, newer than the running statement's. A read racing a refresh then saw the watermark
    moved past an hour whose materialized rows its own snapshot did not have yet: the hour was
    in neither part of the real-time view (an hourly row with energy null, seen in CI). In a
    REPEATABLE READ transaction both reads use the transaction's snapshot."""
    async with connection(request) as conn:
        await conn.execute(READ_SNAPSHOT)
        yield conn


SPARE_WAIT_S = 0.05
"""How long a read waits for a second pooled connection before doing all its work on one."""


@asynccontextmanager
async def spare_snapshot(
    request: web.Request, conn: AsyncConnection[Any]
) -> AsyncIterator[AsyncConnection[Any] | None]:
    """A second pooled connection whose read-only transaction sees the snapshot of `conn` (from
    `snapshot`; `pg_export_snapshot`), so that a long read can split its work over two backends
    (two cores) and still answer from one snapshot; None when no pooled connection is idle: the
    caller does it all on `conn` (a busy pool is not made busier, no connection is opened)."""
    pool = request.config_dict[POOL]
    if pool.get_stats().get("pool_available", 0) < 1:
        yield None
        return
    async with AsyncExitStack() as stack:
        other: AsyncConnection[Any] | None = None
        snapshot_id = await export_snapshot(conn)
        with suppress(PoolTimeout):
            other = await stack.enter_async_context(pooled_transaction(pool, SPARE_WAIT_S))
        if other is not None:
            await other.execute(READ_SNAPSHOT)
            await adopt_snapshot(other, snapshot_id)
        yield other


def budget_address(request: web.Request) -> str:
    """Who is asking, as the failed-authentication budget counts it: the client address
    (`ingestd.client_address`, behind trusted proxies), an IPv6 one by its /64."""
    peer = request.transport.get_extra_info("peername") if request.transport else None
    host = peer[0] if isinstance(peer, tuple) and peer else request.remote
    forwarded = request.headers.getall("X-Forwarded-For", [])
    trusted = request.config_dict[SETTINGS].trusted_proxies
    return budget_key(client_address(host, forwarded, trusted))
