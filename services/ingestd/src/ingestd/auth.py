"""Finding the customer behind a push token: from the token cache, else a lookup shared with
every other request waiting for one (`TokenLookups`).

A fleet's first minute after ingestd starts (or a cache's TTL) is a token lookup per gateway,
all at once. Looked up one request at a time, each lookup held a pool connection of its own
before the request had a slot (authentication comes first): at 1,500 gateways starting within
10 s, 616 requests waited out the pool deadline and were answered 503 "database unavailable",
and the lookups took the connections the batches being stored needed. Now the misses queue up
and one statement at a time (`storage.tokens.lookup_tokens`) answers up to MAX_LOOKUP_BATCH of
them on one connection; a request whose token another request's statement answered just reads
the result.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from ingestd.errors import Unauthorized
from ingestd.storage.tokens import Customer, TokenRow, lookup_tokens
from ingestd.tokencache import TokenCache

__all__ = ["MAX_LOOKUP_BATCH", "Customer", "TokenLookups"]

MAX_LOOKUP_BATCH = 1000
"""Token hashes answered by one statement at most (an index lookup each)."""


def _retrieved(future: asyncio.Future[TokenRow | None]) -> None:
    """A failed lookup's error is read by its waiters; one that gave up must not leave it
    'never retrieved'."""
    if not future.cancelled():
        future.exception()


class TokenLookups:
    """The cache misses waiting for a lookup, answered together one statement at a time."""

    def __init__(self, cache: TokenCache) -> None:
        self.cache = cache
        self.statements = 0
        self._waiting: dict[bytes, asyncio.Future[TokenRow | None]] = {}
        self._turn = asyncio.Lock()

    async def customer(
        self,
        token_hash: bytes,
        pool: AsyncConnectionPool[AsyncConnection[Any]],
        timeout_s: float,
    ) -> Customer:
        """The customer of a live token; `Unauthorized` for any other. A lookup's statement
        takes a connection from `pool` within `timeout_s` (PoolTimeout past it, for every
        request it would have answered)."""
        customer = self.cache.get(token_hash)
        if customer is not None:
            return customer
        future = self._waiting.get(token_hash)
        if future is None:
            future = asyncio.get_running_loop().create_future()
            future.add_done_callback(_retrieved)
            self._waiting[token_hash] = future
        while not future.done():
            async with self._turn:
                if not future.done():
                    await self._look_up(pool, timeout_s)
        found = future.result()
        if found is None:
            raise Unauthorized()
        return found[0]

    async def _look_up(
        self, pool: AsyncConnectionPool[AsyncConnection[Any]], timeout_s: float
    ) -> None:
        """One statement for the first MAX_LOOKUP_BATCH waiting hashes. Results are cached
        unless a token change was announced meanwhile; failures are never cached (a new token
        works at once). Cancelled, the hashes stay waiting for the next turn."""
        hashes = list(itertools.islice(self._waiting, MAX_LOOKUP_BATCH))
        generation = self.cache.generation
        try:
            async with pool.connection(timeout=timeout_s) as conn:
                self.statements += 1
                found = await lookup_tokens(conn, hashes)
        except Exception as exc:
            for token_hash in hashes:
                self._waiting.pop(token_hash).set_exception(exc)
            return
        for token_hash in hashes:
            row = found.get(token_hash)
            if row is not None:
                self.cache.put(token_hash, row[0], row[1], generation)
            self._waiting.pop(token_hash).set_result(row)
