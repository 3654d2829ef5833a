"""The token table as ingestd's push path reads it: the lookup of the hashes waiting
together (one statement), and the change notifications.

Migration 0003 adds a trigger that announces every update or delete of a token row on the
`fleet_tokens` channel with the token's SHA-256 in hex; `ingestd.tokencache` listens to it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection

__all__ = [
    "TOKEN_CHANNEL",
    "Customer",
    "TokenRow",
    "listen_token_changes",
    "lookup_tokens",
    "ping",
]

TOKEN_CHANNEL = "fleet_tokens"

# The cache misses waiting together (one, or a fleet's first minute), in one statement: the
# primary key on token_hash makes each hash an index lookup; expiry and revocation are checked in
# the same statement, and the expiry is returned so a cached entry ends with the token.
LOOKUP_TOKENS = """
SELECT t.token_hash, c.id, c.code, t.expires_at
FROM fleet.customer_tokens t JOIN fleet.customers c ON c.id = t.customer_id
WHERE t.token_hash = ANY(%s::bytea[]) AND t.revoked_at IS NULL
  AND (t.expires_at IS NULL OR t.expires_at > now())
"""


@dataclass(frozen=True, slots=True)
class Customer:
    """The customer a live push token belongs to."""

    id: int
    code: str


TokenRow = tuple[Customer, datetime | None]


async def lookup_tokens(
    conn: AsyncConnection[Any], token_hashes: list[bytes]
) -> dict[bytes, TokenRow]:
    """(the customer, the token's expiry) of each live token among `token_hashes`, by hash;
    the others are absent."""
    cur = await conn.execute(LOOKUP_TOKENS, (token_hashes,), prepare=True)
    return {
        bytes(row[0]): (Customer(int(row[1]), str(row[2])), row[3]) for row in await cur.fetchall()
    }


async def ping(conn: AsyncConnection[Any]) -> None:
    """A round trip that proves the connection still answers."""
    await conn.execute("SELECT 1")


async def listen_token_changes(conn: AsyncConnection[Any]) -> None:
    """Subscribe `conn` (autocommit) to the token change notifications."""
    await conn.execute(f"LISTEN {TOKEN_CHANNEL}")
