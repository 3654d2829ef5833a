"""Which customer rows the protocol can carry, and how the cursor passes the ones it cannot.

RFC 3339 times run from year 0001 to 9999; PostgreSQL's timestamptz also holds ±infinity, BC
dates and years up to 294276, and Python's datetime holds none of those. A measurement whose
`time` or `received_at` lies outside (LOW, HIGH) — the two end instants included, they are the
cursor's markers — is *uncarriable*: it is never sent, it is quarantined on the gateway
(`app.fleet_push_quarantine`, with the reason) when the cursor passes it.

The cursor must be able to pass such a row although its time fits no datetime. Within one
`(push_xid, device_id)`, uncarriable times sort before LOW or after HIGH, so the cursor stops
at LOW ("every row of this device in this transaction up to year 0001 is passed") or at HIGH
("... up to +infinity": `cursor.cursor_key` reads HIGH as infinity). Whatever the markers pass
beyond the batch read is uncarriable too, and quarantined in the same transaction as the cursor
moves (`pusher.state.push_state.QUARANTINE_PASSED`).
"""

from __future__ import annotations

from datetime import UTC, datetime

__all__ = ["HIGH", "HIGH_SQL", "LOW", "LOW_SQL", "carriable_sql"]

LOW = datetime(1, 1, 1, tzinfo=UTC)
HIGH = datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
LOW_SQL = "'0001-01-01 00:00:00+00'::timestamptz"
HIGH_SQL = "'9999-12-31 23:59:59.999999+00'::timestamptz"


def carriable_sql(*columns: str) -> str:
    """SQL: every one of `columns` is a time the protocol carries."""
    return "(" + " AND ".join(f"({c} > {LOW_SQL} AND {c} < {HIGH_SQL})" for c in columns) + ")"
