"""Finding the customer behind a push token: from the token cache, else one indexed lookup."""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from ingestd.errors import Unauthorized
from ingestd.storage.tokens import Customer, lookup_token
from ingestd.tokencache import TokenCache

__all__ = ["Customer", "customer_of_token"]


async def customer_of_token(
    token_hash: bytes,
    cache: TokenCache,
    pool: AsyncConnectionPool[AsyncConnection[Any]],
    timeout_s: float,
) -> Customer:
    """The customer of a live token (the SHA-256 of a well-formed token); raise the one
    `Unauthorized` for every failure. A lookup takes a connection from `pool` within `timeout_s`
    and is cached unless a token change was announced while it ran; failures are never cached
    (a new token works at once)."""
    customer = cache.get(token_hash)
    if customer is not None:
        return customer
    generation = cache.generation
    async with pool.connection(timeout=timeout_s) as conn:
        found = await lookup_token(conn, token_hash)
    if found is None:
        raise Unauthorized()
    customer, expires_at = found
    cache.put(token_hash, customer, expires_at, generation)
    return customer
