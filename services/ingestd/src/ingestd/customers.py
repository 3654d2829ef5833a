"""Customer and token administration (the `ingestd customers …` commands).

A token is printed once, when it is issued; the database keeps only its SHA-256. Rotation issues
a new token and lets the current ones keep working for a grace period, so a gateway can be
re-configured without a gap; revocation ends every token of the customer at once. The SQL is in
`ingestd.storage.customers`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg
from fleetcore import generate_token, hash_token, token_hint

from ingestd.storage import customers as rows

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


def _issue(conn: psycopg.Connection[Any], customer_id: int) -> str:
    token = generate_token()
    rows.insert_token(conn, customer_id, hash_token(token), token_hint(token))
    return token


def _customer_id(conn: psycopg.Connection[Any], code: str) -> int:
    found = rows.customer_id(conn, code)
    if found is None:
        raise UnknownCustomer(f"no customer with code {code!r}")
    return found


def add_customer(database_url: str, code: str, name: str | None = None) -> str:
    """Register a customer and return its first token (the only time it is ever shown)."""
    with psycopg.connect(database_url) as conn:
        try:
            customer_id = rows.insert_customer(conn, code, name)
        except psycopg.errors.UniqueViolation:
            raise CustomerExists(f"customer {code!r} already exists") from None
        except psycopg.errors.CheckViolation:
            raise ValueError(
                f"invalid customer code {code!r}: letters, digits, '_', '-', '.', at most 64"
            ) from None
        return _issue(conn, customer_id)


def rotate_token(database_url: str, code: str, grace: timedelta) -> str:
    """Issue a new token; the customer's current tokens expire after `grace`."""
    with psycopg.connect(database_url) as conn:
        customer_id = _customer_id(conn, code)
        rows.expire_tokens(conn, customer_id, grace)
        return _issue(conn, customer_id)


def revoke_tokens(database_url: str, code: str) -> int:
    """End every active token of the customer now; return how many were active."""
    with psycopg.connect(database_url) as conn:
        return rows.revoke_active_tokens(conn, _customer_id(conn, code))


def list_customers(database_url: str) -> list[CustomerInfo]:
    with psycopg.connect(database_url) as conn:
        return [CustomerInfo(*row) for row in rows.customer_rows(conn)]
