"""The push cursor in SQL, written once: which rows come next, in which order, and the
parameters that carry a cursor into a statement. Every reader of the customer database uses it
(the JSON and the columnar batch, the backlog count, the shippable count, the quarantine of
rows the cursor passes).

The cursor is the key `(push_xid, device_id, time)` of the last row shipped
(`fleetcore.PushCursor`; why that key loses nothing: `fleetcore.cursor`). A batch is the rows
after it whose writing transaction lies below the reading snapshot's xmin (every such
transaction has ended, so no row can later appear behind the cursor), in key order, up to a
limit. A cursor on a row whose time the protocol cannot carry stands on a marker
(`carriable.LOW` or `HIGH`); `cursor_key` reads HIGH as +infinity so the cursor passes every
later time of that device and transaction.
"""

from __future__ import annotations

from typing import Any

import msgspec
from fleetcore import MeasurementRow, PushCursor

from pusher.source.carriable import HIGH_SQL, LOW_SQL

__all__ = [
    "ITEM_COLUMNS",
    "SELECTION",
    "after",
    "below_horizon",
    "cursor_key",
    "cursor_params",
    "cursor_time_sql",
    "item_columns",
    "key_columns",
    "order_by",
    "selection_params",
    "up_to",
]

ITEM_COLUMNS = tuple(field.encode_name for field in msgspec.structs.fields(MeasurementRow))
"""The columns of one measurement item: the protocol's row (`fleetcore.MeasurementRow`), in its
order, which is also the order of the `app.fleet_push_item` type its JSON is built with (the
pusher's migration 0002; tests/pusher/test_item_type.py fails if they drift)."""


def item_columns(alias: str) -> str:
    """SQL: the item's columns of the row `alias`, comma-separated."""
    return ", ".join(f"{alias}.{name}" for name in ITEM_COLUMNS)


def key_columns(alias: str) -> str:
    """SQL: the cursor's key columns of the row `alias`, in the cursor's order."""
    return f"{alias}.push_xid, {alias}.device_id, {alias}.time"


def _key(alias: str) -> str:
    return f"({key_columns(alias)})"


def cursor_key(prefix: str = "") -> str:
    """SQL: the row key of the cursor in parameters `<prefix>xid`, `<prefix>device_id` and
    `<prefix>time`, the HIGH marker read as +infinity."""
    time = f"%({prefix}time)s::timestamptz"
    return (
        f"(%({prefix}xid)s::xid8, %({prefix}device_id)s, "
        f"CASE WHEN {time} >= {HIGH_SQL} THEN 'infinity'::timestamptz ELSE {time} END)"
    )


def cursor_params(cursor: PushCursor, prefix: str = "") -> dict[str, Any]:
    """The parameters of `cursor_key(prefix)` for `cursor`."""
    return {
        f"{prefix}xid": str(cursor.xid),
        f"{prefix}device_id": cursor.device_id,
        f"{prefix}time": cursor.time,
    }


def after(alias: str, prefix: str = "") -> str:
    """SQL: the row `alias` lies after the cursor in parameters `<prefix>…`."""
    return f"{_key(alias)} > {cursor_key(prefix)}"


def up_to(alias: str, prefix: str = "") -> str:
    """SQL: the row `alias` lies at or before the cursor in parameters `<prefix>…`."""
    return f"{_key(alias)} <= {cursor_key(prefix)}"


def below_horizon(alias: str) -> str:
    """SQL: the row `alias` was written by a transaction that has ended for every snapshot
    (below this statement's snapshot xmin), so nothing can appear behind it later."""
    return f"{alias}.push_xid < (SELECT pg_snapshot_xmin(pg_current_snapshot()))"


def order_by(alias: str, *, descending: bool = False) -> str:
    """SQL: the cursor's order of the rows `alias` (descending: the last first)."""
    direction = " DESC" if descending else ""
    return ", ".join(f"{alias}.{c}{direction}" for c in ("push_xid", "device_id", "time"))


def cursor_time_sql(column: str) -> str:
    """SQL: `column` as the cursor keeps it (uncarriable times become the marker they sort by)."""
    return (
        f"CASE WHEN {column} <= {LOW_SQL} THEN {LOW_SQL} "
        f"WHEN {column} >= {HIGH_SQL} THEN {HIGH_SQL} ELSE {column} END"
    )


SELECTION = f"""
          FROM monitoring.power_measurements AS m
          WHERE {after("m")}
            AND {below_horizon("m")}
          ORDER BY {order_by("m")}
          LIMIT %(limit)s"""
"""SQL: the next batch's rows `m`, from FROM to LIMIT; a statement selects what it needs of
them and passes `selection_params`."""


def selection_params(cursor: PushCursor, limit: int) -> dict[str, Any]:
    """The parameters of `SELECTION`: the rows after `cursor`, at most `limit`."""
    return {**cursor_params(cursor), "limit": limit}
