"""`pusher status`: where each resource stands, read from the customer database alone."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from psycopg.rows import tuple_row

from pusher import source
from pusher.state import Resource, load_states

__all__ = ["collect_status"]

COUNT_BACKLOG = """
SELECT count(*),
       count(*) FILTER (WHERE m.push_xid < (SELECT pg_snapshot_xmin(pg_current_snapshot())))
FROM monitoring.power_measurements AS m
WHERE (m.push_xid, m.device_id, m.time) > (%(xid)s::xid8, %(device_id)s, %(time)s)
"""

# The most recently written row, found from the end of the push index (no table scan).
NEWEST_WRITTEN = """
SELECT m.received_at FROM monitoring.power_measurements AS m
ORDER BY m.push_xid DESC, m.device_id DESC, m.time DESC
LIMIT 1
"""

COUNT_QUARANTINE = "SELECT count(*) FROM app.fleet_push_quarantine"


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


async def collect_status(database_url: str, blocking_min_age_s: float) -> dict[str, Any]:
    """Per resource: cursor, batch size, failures, next attempt, last error and success; for
    measurements also the backlog, the lag and what holds the cursor back."""
    async with await source.connect(database_url) as conn:
        states = await load_states(conn)
        horizon = await source.read_horizon(conn)
        blocker = await source.find_blocking_transaction(conn, blocking_min_age_s)
        async with conn.cursor(row_factory=tuple_row) as cur:
            await cur.execute(NEWEST_WRITTEN)
            newest_row = await cur.fetchone()
            await cur.execute(COUNT_QUARANTINE)
            quarantined_row = await cur.fetchone()
        resources: dict[str, Any] = {}
        for resource in Resource:
            state = states.get(resource)
            if state is None:
                resources[resource.value] = {"state": "never run"}
                continue
            entry: dict[str, Any] = {
                "batch_size": state.batch_size,
                "consecutive_failures": state.consecutive_failures,
                "next_attempt_at": _iso(state.next_attempt_at),
                "last_status": state.last_status,
                "last_error": state.last_error,
                "last_error_at": _iso(state.last_error_at),
                "last_success_at": _iso(state.last_success_at),
                "shipped_rows": state.shipped_rows,
            }
            if resource is Resource.MEASUREMENTS:
                cursor = state.cursor
                params = {
                    "xid": str(cursor.xid),
                    "device_id": cursor.device_id,
                    "time": cursor.time,
                }
                async with conn.cursor(row_factory=tuple_row) as cur:
                    await cur.execute(COUNT_BACKLOG, params)
                    counts = await cur.fetchone()
                backlog, shippable = counts if counts else (0, 0)
                newest_local = newest_row[0] if newest_row else None
                newest_shipped = state.newest_shipped_received_at
                lag_s: float | None = 0.0
                if backlog and newest_local is not None:
                    lag_s = (
                        (newest_local - newest_shipped).total_seconds()
                        if newest_shipped is not None
                        else None
                    )
                entry.update(
                    cursor=str(cursor),
                    cursor_ahead_of_server=cursor.xid >= horizon.xmax,
                    backlog_rows=backlog,
                    backlog_rows_shippable_now=shippable,
                    newest_local_received_at=_iso(newest_local),
                    newest_shipped_received_at=_iso(newest_shipped),
                    lag_s=lag_s,
                    quarantined_rows=quarantined_row[0] if quarantined_row else 0,
                )
            resources[resource.value] = entry
    return {
        "snapshot_xmin": horizon.xmin,
        "blocking_transaction": blocker.as_log() if blocker is not None else None,
        "resources": resources,
    }
