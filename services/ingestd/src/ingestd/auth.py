"""Finding the customer behind a push token: one indexed lookup of the token's SHA-256."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fleetcore import hash_token, looks_like_token
from psycopg import AsyncConnection

from ingestd.errors import Unauthorized

__all__ = ["TOKEN_HEADER", "Customer", "authenticate"]

TOKEN_HEADER = "X-Customer-Token"

# The primary key on token_hash makes this an index lookup; expiry and revocation are checked
# in the same statement so a revoked token stops working on the very next request.
LOOKUP_TOKEN = """
SELECT c.id, c.code
FROM fleet.customer_tokens t JOIN fleet.customers c ON c.id = t.customer_id
WHERE t.token_hash = %s AND t.revoked_at IS NULL AND (t.expires_at IS NULL OR t.expires_at > now())
"""


@dataclass(frozen=True, slots=True)
class Customer:
    id: int
    code: str


async def authenticate(conn: AsyncConnection[Any], token: str | None) -> Customer:
    """Return the token's customer; raise the one `Unauthorized` for every failure."""
    if not looks_like_token(token):
        raise Unauthorized()
    assert token is not None
    cur = await conn.execute(LOOKUP_TOKEN, (hash_token(token),))
    row = await cur.fetchone()
    if row is None:
        raise Unauthorized()
    return Customer(id=int(row[0]), code=str(row[1]))
