"""Finding the customer behind a push token: one indexed lookup of the token's SHA-256."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fleetcore import hash_token, looks_like_token
from psycopg import AsyncConnection

from ingestd.errors import Unauthorized
from ingestd.storage.reads import customer_by_token_hash

__all__ = ["Customer", "authenticate"]


@dataclass(frozen=True, slots=True)
class Customer:
    id: int
    code: str


async def authenticate(conn: AsyncConnection[Any], token: str | None) -> Customer:
    """Return the token's customer; raise the one `Unauthorized` for every failure."""
    if not looks_like_token(token):
        raise Unauthorized()
    assert token is not None
    found = await customer_by_token_hash(conn, hash_token(token))
    if found is None:
        raise Unauthorized()
    return Customer(id=found[0], code=found[1])
