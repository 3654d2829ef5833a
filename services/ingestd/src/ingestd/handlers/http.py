"""What every handler shares: JSON answers, the errors that mean "database unavailable", and a
pooled connection within the pool deadline."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import msgspec
import psycopg
from aiohttp import web
from psycopg import AsyncConnection
from psycopg_pool import PoolTimeout

from ingestd.client_address import budget_key, client_address
from ingestd.keys import POOL, SETTINGS

__all__ = ["DB_UNAVAILABLE", "Handler", "budget_address", "connection", "json_answer"]

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
    """A pooled connection (PoolTimeout past INGESTD_POOL_TIMEOUT_S); commits on success."""
    config = request.config_dict
    async with config[POOL].connection(timeout=config[SETTINGS].pool_timeout_s) as conn:
        yield conn


def budget_address(request: web.Request) -> str:
    """Who is asking, as the failed-authentication budget counts it: the client address
    (`ingestd.client_address`, behind trusted proxies), an IPv6 one by its /64."""
    peer = request.transport.get_extra_info("peername") if request.transport else None
    host = peer[0] if isinstance(peer, tuple) and peer else request.remote
    forwarded = request.headers.getall("X-Forwarded-For", [])
    trusted = request.config_dict[SETTINGS].trusted_proxies
    return budget_key(client_address(host, forwarded, trusted))
