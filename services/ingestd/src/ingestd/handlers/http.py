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

from ingestd.keys import POOL, SETTINGS

__all__ = ["DB_UNAVAILABLE", "Handler", "connection", "json_answer"]

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
