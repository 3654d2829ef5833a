"""`pusher status`: where each resource stands, read from the customer database alone.

The backlog and the lag are the daemon's own computations (`source.read_backlog`,
`progress.measurement_lag_s`), only with the backlog counted in full; the lag is null while
rows wait and nothing was ever delivered.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fleetcore.protocol import BatchType

from pusher import source
from pusher.delivery.uploadcap import drain_seconds
from pusher.ops.progress import measurement_lag_s
from pusher.state import count_quarantined, load_states
from pusher.state.reconcile_state import load_reconcile_state

__all__ = ["collect_status"]


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


async def collect_status(
    database_url: str, blocking_min_age_s: float, upload_cap: int = 0
) -> dict[str, Any]:
    """Per resource: cursor, batch size, failures, next attempt, last error and success, bytes
    sent; for measurements also the backlog, the lag, what holds the cursor back, and how long
    the backlog takes to send under the upload cap (`upload_cap` bytes/s, 0: none); the last
    reconciliation pass and its totals (rows re-sent apart from rows shipped)."""
    async with await source.connect(database_url) as conn:
        states = await load_states(conn)
        horizon = await source.read_horizon(conn)
        blocker = await source.find_blocking_transaction(conn, blocking_min_age_s)
        resources: dict[str, Any] = {}
        for resource in BatchType:
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
                "sent_bytes": state.sent_bytes,
            }
            if resource is BatchType.MEASUREMENTS:
                cursor = state.cursor
                backlog = await source.read_backlog(conn, cursor, bound=None)
                newest_shipped = state.newest_shipped_received_at
                lag_s: float | None = measurement_lag_s(
                    backlog.rows, backlog.newest_received_at, newest_shipped
                )
                if backlog.rows and backlog.newest_received_at and newest_shipped is None:
                    lag_s = None  # rows wait, none ever delivered: nothing to measure from
                entry.update(
                    cursor=str(cursor),
                    cursor_ahead_of_server=cursor.xid >= horizon.xmax,
                    backlog_rows=backlog.rows,
                    backlog_rows_shippable_now=await source.count_shippable(conn, cursor),
                    newest_local_received_at=_iso(backlog.newest_received_at),
                    newest_shipped_received_at=_iso(newest_shipped),
                    lag_s=lag_s,
                    quarantined_rows=await count_quarantined(conn),
                    bytes_per_row=round(state.sent_bytes / state.shipped_rows, 1)
                    if state.shipped_rows
                    else None,
                    projected_drain_s=round(
                        drain_seconds(
                            backlog.rows, state.sent_bytes, state.shipped_rows, upload_cap
                        ),
                        1,
                    )
                    if upload_cap
                    else None,
                )
            resources[resource.value] = entry
        reconciliation = await load_reconcile_state(conn)
    return {
        "upload_cap_bytes_per_s": upload_cap or None,
        "snapshot_xmin": horizon.xmin,
        "blocking_transaction": blocker.as_log() if blocker is not None else None,
        "resources": resources,
        "reconciliation": {
            k: _iso(v) if isinstance(v, datetime) else v for k, v in reconciliation.items()
        },
    }
