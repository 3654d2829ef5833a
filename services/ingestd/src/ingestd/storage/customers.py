"""The customer and token rows behind `ingestd customers …` (synchronous psycopg: a CLI).

`CUSTOMER_ID` is also what the read API runs (`ingestd.storage.reads.customer_id`)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import psycopg

__all__ = [
    "CUSTOMER_ID",
    "customer_id",
    "customer_rows",
    "expire_tokens",
    "insert_customer",
    "insert_token",
    "revoke_active_tokens",
]

INSERT_CUSTOMER = "INSERT INTO fleet.customers (code, name) VALUES (%s, %s) RETURNING id"
CUSTOMER_ID = "SELECT id FROM fleet.customers WHERE code = %s"
INSERT_TOKEN = (
    "INSERT INTO fleet.customer_tokens (token_hash, customer_id, hint) VALUES (%s, %s, %s)"
)
EXPIRE_TOKENS = """UPDATE fleet.customer_tokens
   SET expires_at = LEAST(coalesce(expires_at, 'infinity'), now() + %s)
   WHERE customer_id = %s AND revoked_at IS NULL"""
REVOKE_TOKENS = """UPDATE fleet.customer_tokens SET revoked_at = now()
   WHERE customer_id = %s AND revoked_at IS NULL
     AND (expires_at IS NULL OR expires_at > now())"""
LIST_CUSTOMERS = """SELECT c.code, c.name, c.created_at, c.first_seen_at, c.last_seen_at,
          count(t.token_hash) FILTER (
              WHERE t.revoked_at IS NULL AND (t.expires_at IS NULL OR t.expires_at > now()))
   FROM fleet.customers c LEFT JOIN fleet.customer_tokens t ON t.customer_id = c.id
   GROUP BY c.id ORDER BY c.code"""


def insert_customer(conn: psycopg.Connection[Any], code: str, name: str | None) -> int:
    """The new customer's id (UniqueViolation: the code exists; CheckViolation: a bad code)."""
    row = conn.execute(INSERT_CUSTOMER, (code, name)).fetchone()
    assert row is not None
    return int(row[0])


def customer_id(conn: psycopg.Connection[Any], code: str) -> int | None:
    """The id of the customer with that code; None when there is none."""
    row = conn.execute(CUSTOMER_ID, (code,)).fetchone()
    return int(row[0]) if row is not None else None


def insert_token(
    conn: psycopg.Connection[Any], customer_id: int, token_hash: bytes, hint: str
) -> None:
    conn.execute(INSERT_TOKEN, (token_hash, customer_id, hint))


def expire_tokens(conn: psycopg.Connection[Any], customer_id: int, grace: timedelta) -> None:
    """The customer's live tokens expire after `grace` (sooner if they already would)."""
    conn.execute(EXPIRE_TOKENS, (grace, customer_id))


def revoke_active_tokens(conn: psycopg.Connection[Any], customer_id: int) -> int:
    """Revoke the customer's active tokens now; return how many were active."""
    return conn.execute(REVOKE_TOKENS, (customer_id,)).rowcount


def customer_rows(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    """code, name, created_at, first_seen_at, last_seen_at, active tokens; by code."""
    return list(conn.execute(LIST_CUSTOMERS).fetchall())
