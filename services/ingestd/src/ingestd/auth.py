"""Finding the customer behind a push token: from the token cache, else one indexed lookup."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from psycopg import AsyncConnection

from ingestd.errors import Unauthorized
from ingestd.storage.tokens import lookup_token

if TYPE_CHECKING:
    from ingestd.tokencache import TokenCache

__all__ = ["Customer", "find_customer"]

Connect = Callable[[], AbstractAsyncContextManager[AsyncConnection[Any]]]


@dataclass(frozen=True, slots=True)
class Customer:
    id: int
    code: str


async def find_customer(token_hash: bytes, cache: TokenCache, connect: Connect) -> Customer:
    """The customer of a live token (the SHA-256 of a well-formed token); raise the one
    `Unauthorized` for every failure. A database lookup is cached unless a token change was
    announced while it ran; failures are never cached (a new token works at once)."""
    customer = cache.get(token_hash)
    if customer is not None:
        return customer
    generation = cache.generation
    async with connect() as conn:
        found = await lookup_token(conn, token_hash)
    if found is None:
        raise Unauthorized()
    customer = Customer(id=found[0], code=found[1])
    cache.put(token_hash, customer, found[2], generation)
    return customer
