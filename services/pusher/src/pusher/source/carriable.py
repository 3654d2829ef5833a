"""Which customer rows the protocol can carry, and how the cursor passes the ones it cannot.

RFC 3339 times run from year 0001 to 9999; PostgreSQL's timestamptz also holds ±infinity, BC
dates and years up to 294276, and Python's datetime holds none of those. A measurement whose
`time` or `received_at` lies outside (LOW, HIGH) — the two end instants included, they are the
cursor's markers — is *uncarriable*: it is never sent, it is quarantined on the gateway
(`app.fleet_push_quarantine`, with the reason) when the cursor passes it.

The cursor must be able to pass such a row although its time fits no datetime. Within one
`(push_xid, device_id)`, uncarriable times sort before LOW or after HIGH, so the cursor stops
at LOW ("every row of this device in this transaction up to year 0001 is passed") or at HIGH
("... up to +infinity": `CURSOR_KEY` reads HIGH as infinity). Whatever the markers pass beyond
the batch read is uncarriable too, and quarantined in the same transaction as the cursor moves
(`pusher.state.push_state.QUARANTINE_PASSED`).
"""

from __future__ import annotations

from datetime import UTC, datetime

__all__ = ["CURSOR_KEY", "HIGH", "LOW", "carriable_sql", "cursor_key", "cursor_time_sql"]

LOW = datetime(1, 1, 1, tzinfo=UTC)
HIGH = datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
_LOW_SQL = "'0001-01-01 00:00:00+00'::timestamptz"
_HIGH_SQL = "'9999-12-31 23:59:59.999999+00'::timestamptz"


def carriable_sql(*columns: str) -> str:
    """SQL: every one of `columns` is a time the protocol carries."""
    return "(" + " AND ".join(f"({c} > {_LOW_SQL} AND {c} < {_HIGH_SQL})" for c in columns) + ")"


def cursor_time_sql(column: str) -> str:
    """SQL: `column` as the cursor keeps it (uncarriable times become the marker they sort by)."""
    return (
        f"CASE WHEN {column} <= {_LOW_SQL} THEN {_LOW_SQL} "
        f"WHEN {column} >= {_HIGH_SQL} THEN {_HIGH_SQL} ELSE {column} END"
    )


def cursor_key(prefix: str = "") -> str:
    """SQL: the row key of the cursor in parameters `<prefix>xid`, `<prefix>device_id` and
    `<prefix>time`, the HIGH marker read as +infinity."""
    time = f"%({prefix}time)s::timestamptz"
    return (
        f"(%({prefix}xid)s::xid8, %({prefix}device_id)s, "
        f"CASE WHEN {time} >= {_HIGH_SQL} THEN 'infinity'::timestamptz ELSE {time} END)"
    )


CURSOR_KEY = cursor_key()
