"""Recovering from a restored or moved customer database, checked once per tick.

A logical restore into another cluster (or a restore of an older base backup) leaves xids that
this server has not reached yet: rows stamped with them would wait below no snapshot xmin
forever, and a cursor beyond the server's counter would skip every new row. Both are repaired
here, loudly: future rows get a current stamp, and such a cursor starts over (rows already
shipped are sent again; ingestd keeps one copy).
"""

from __future__ import annotations

from typing import Any

import psycopg
import structlog
from fleetcore import PushCursor
from fleetcore.protocol import BatchType

from pusher import source
from pusher.metrics import PusherMetrics
from pusher.source import SnapshotHorizon
from pusher.state import PushState

__all__ = ["recover_restored_database"]

log = structlog.get_logger("pusher")


async def recover_restored_database(
    conn: psycopg.AsyncConnection[Any], state: PushState, metrics: PusherMetrics
) -> tuple[SnapshotHorizon, bool]:
    """Restamp rows from beyond the server's xid counter and reset a cursor lying beyond it.
    Returns the snapshot horizon read, and whether the cursor was reset."""
    horizon = await source.read_horizon(conn)
    if horizon.has_future_rows:
        log.error(
            "future_rows_found",
            xmax=horizon.xmax,
            hint="rows stamped beyond this server's transaction counter (restored or moved "
            "database?): restamping them so they ship",
        )
        restamped = await source.restamp_future_rows(conn)
        log.warning("future_rows_restamped", rows=restamped)
        metrics.restamped_rows.inc(restamped)
    cursor = state[BatchType.MEASUREMENTS].cursor
    if cursor.xid < horizon.xmax:
        return horizon, False
    log.error(
        "cursor_reset",
        cursor=str(cursor),
        xmax=horizon.xmax,
        hint="the stored cursor lies beyond this server's transaction counter (restored or "
        "moved database?): starting over; rows already shipped are sent again and ingestd "
        "keeps one copy",
    )
    await state.reset_cursor(conn, BatchType.MEASUREMENTS, PushCursor.start())
    metrics.cursor_resets.inc()
    return horizon, True
