"""Recovering from a restored or moved customer database, checked once per tick.

A logical restore into another cluster (or a restore of an older base backup) leaves xids that
this server has not reached yet: rows stamped with them would wait below no snapshot xmin
forever, and a cursor beyond the server's counter would skip every new row. Both are repaired
here, loudly: future rows get a current stamp, and such a cursor starts over (rows already
shipped are sent again; ingestd keeps one copy).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg
import structlog
from fleetcore import PushCursor
from fleetcore.protocol import BatchType

from pusher import source
from pusher.source import SnapshotHorizon
from pusher.state.push_state import PushState

__all__ = ["Recovery", "recover_restored_database"]

log = structlog.get_logger("pusher")


@dataclass(frozen=True, slots=True)
class Recovery:
    """What one check found and repaired: the snapshot horizon read, the rows restamped, and
    whether the cursor was reset."""

    horizon: SnapshotHorizon
    restamped: int = 0
    reset: bool = False


async def recover_restored_database(
    conn: psycopg.AsyncConnection[Any], state: PushState
) -> Recovery:
    """Restamp rows from beyond the server's xid counter and reset a cursor lying beyond it."""
    horizon = await source.read_horizon(conn)
    restamped = 0
    if horizon.has_future_rows:
        log.error(
            "future_rows_found",
            xmax=horizon.xmax,
            hint="rows stamped beyond this server's transaction counter (restored or moved "
            "database?): restamping them so they ship",
        )
        restamped = await source.restamp_future_rows(conn)
        log.warning("future_rows_restamped", rows=restamped)
    cursor = state[BatchType.MEASUREMENTS].cursor
    if cursor.xid < horizon.xmax:
        return Recovery(horizon, restamped)
    log.error(
        "cursor_reset",
        cursor=str(cursor),
        xmax=horizon.xmax,
        hint="the stored cursor lies beyond this server's transaction counter (restored or "
        "moved database?): starting over; rows already shipped are sent again and ingestd "
        "keeps one copy",
    )
    await state.reset_cursor(conn, BatchType.MEASUREMENTS, PushCursor.start())
    return Recovery(horizon, restamped, reset=True)
