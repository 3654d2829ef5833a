"""Customer and token administration (the `ingestd customers …` commands).

A token is printed once, when it is issued; the database keeps only its SHA-256. Rotation issues
a new token and lets the current ones keep working for a grace period, so a gateway can be
re-configured without a gap; revocation ends every token of the customer at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg
from fleetcore import generate_token, hash_token, token_hint

__all__ = [
    "CustomerExists",
    "CustomerInfo",
    "UnknownCustomer",
    "add_customer",
    "list_customers",
    "revoke_tokens",
    "rotate_token",
]


class CustomerExists(ValueError):
    """A customer with that code is already registered."""


class UnknownCustomer(LookupError):
    """No customer has that code."""


@dataclass(frozen=True, slots=True)
class CustomerInfo:
    code: str
    name: str | None
    created_at: datetime
    first_seen_at: datetime | None
    last_seen_at: datetime | None
    active_tokens: int


_INSERT_TOKEN = (
    "INSERT INTO fleet.customer_tokens (token_hash, customer_id, hint) VALUES (%s, %s, %s)"
)


def _issue(conn: psycopg.Connection[Any], customer_id: int) -> str:
    token = generate_token()
    conn.execute(_INSERT_TOKEN, (hash_token(token), customer_id, token_hint(token)))
    return token


def _customer_id(conn: psycopg.Connection[Any], code: str) -> int:
    row = conn.execute("SELECT id FROM fleet.customers WHERE code = %s", (code,)).fetchone()
    if row is None:
        raise UnknownCustomer(f"no customer with code {code!r}")
    return int(row[0])


def add_customer(database_url: str, code: str, name: str | None = None) -> str:
    """Register a customer and return its first token (the only time it is ever shown)."""
    with psycopg.connect(database_url) as conn:
        try:
            row = conn.execute(
                "INSERT INTO fleet.customers (code, name) VALUES (%s, %s) RETURNING id",
                (code, name),
            ).fetchone()
        except psycopg.errors.UniqueViolation:
            raise CustomerExists(f"customer {code!r} already exists") from None
        except psycopg.errors.CheckViolation:
            raise ValueError(
                f"invalid customer code {code!r}: letters, digits, '_', '-', '.', at most 64"
            ) from None
        assert row is not None
        return _issue(conn, int(row[0]))


def rotate_token(database_url: str, code: str, grace: timedelta) -> str:
    """Issue a new token; the customer's current tokens expire after `grace`."""
    with psycopg.connect(database_url) as conn:
        customer_id = _customer_id(conn, code)
        conn.execute(
            """UPDATE fleet.customer_tokens
               SET expires_at = LEAST(coalesce(expires_at, 'infinity'), now() + %s)
               WHERE customer_id = %s AND revoked_at IS NULL""",
            (grace, customer_id),
        )
        return _issue(conn, customer_id)


def revoke_tokens(database_url: str, code: str) -> int:
    """End every active token of the customer now; return how many were active."""
    with psycopg.connect(database_url) as conn:
        customer_id = _customer_id(conn, code)
        cur = conn.execute(
            """UPDATE fleet.customer_tokens SET revoked_at = now()
               WHERE customer_id = %s AND revoked_at IS NULL
                 AND (expires_at IS NULL OR expires_at > now())""",
            (customer_id,),
        )
        return cur.rowcount


def list_customers(database_url: str) -> list[CustomerInfo]:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            """SELECT c.code, c.name, c.created_at, c.first_seen_at, c.last_seen_at,
                      count(t.token_hash) FILTER (
                          WHERE t.revoked_at IS NULL AND (t.expires_at IS NULL OR t.expires_at > now()))
               FROM fleet.customers c LEFT JOIN fleet.customer_tokens t ON t.customer_id = c.id
               GROUP BY c.id ORDER BY c.code"""
        ).fetchall()
    return [CustomerInfo(*row) for row in rows]
