"""The housekeeping task: storage upkeep beside the ingest path, on a connection of its own.

`housekeeping_cycle` is one round, run every INGESTD_HOUSEKEEPING_INTERVAL_S by
`housekeeping_loop`; the replicas take turns (`storage.maintenance.housekeeping_turn`), so one
round runs at a time across the deployment:

- every round: recompute marked hourly buckets (plain rollup, or TimescaleDB refresh of old
  buckets; `storage.rollup`), then store the energy of hours not stored yet, about
  INGESTD_ROLLUP_BATCH device-hours, no device started after INGESTD_HOUSEKEEPING_INTERVAL_S
  (`storage.energy_upkeep`);
- every minute: give new devices a stored-energy frontier (on TimescaleDB those of the rows
  sampled since the previous minute's; of the last hour's once an hour); delete audit rows and dead letters past INGESTD_AUDIT_RETENTION_DAYS /
  INGESTD_REJECTED_RETENTION_DAYS, and gateway health reports past
  INGESTD_GATEWAY_REPORT_RETENTION_DAYS, in short batches (`storage.retention`, `storage.gateways`);
- every hour: create the weekly partitions ahead (plain) and apply raw-data retention
  (`storage.maintenance.maintain`). The hourly aggregate is never touched.

The SQL is all in `ingestd.storage`; this module decides when, and survives outages.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import structlog
from psycopg import AsyncConnection

from ingestd.settings import Settings
from ingestd.storage import StorageMode, detect_mode
from ingestd.storage.energy_upkeep import advance_stored_energy, seed_frontiers
from ingestd.storage.gateways import delete_old_reports
from ingestd.storage.maintenance import housekeeping_turn, maintain
from ingestd.storage.retention import apply_retention
from ingestd.storage.rollup import RefreshReport, count_dirty, refresh_rollup, refresh_timescale
from ingestd.storage.state import StorageState

__all__ = ["MAINTENANCE_EVERY_S", "RETENTION_EVERY_S", "housekeeping_cycle", "housekeeping_loop"]

log = structlog.get_logger("ingestd.housekeeping")

MAINTENANCE_EVERY_S = 3600.0
RETENTION_EVERY_S = 60.0
SEED_FULL_EVERY = timedelta(hours=1)
SEED_MARGIN = timedelta(minutes=2)


async def _seed(conn: AsyncConnection[Any], state: StorageState) -> None:
    """New devices' frontiers: on TimescaleDB from the rows sampled since the previous seed less
    SEED_MARGIN (a tick's samples arrive within seconds; later ones of past hours are marked),
    and from the whole last hour every SEED_FULL_EVERY (`seed_frontiers`)."""
    now = datetime.now(UTC)
    full = state.last_full_seed is None or now - state.last_full_seed >= SEED_FULL_EVERY
    since = None if full or state.last_seed is None else state.last_seed - SEED_MARGIN
    await seed_frontiers(conn, timescale=state.mode is StorageMode.TIMESCALEDB, since=since)
    state.last_seed = now
    if full:
        state.last_full_seed = now


async def housekeeping_cycle(
    conn: AsyncConnection[Any],
    state: StorageState,
    settings: Settings,
    *,
    maintenance: bool | None = None,
) -> RefreshReport | None:
    """One round; returns what the refresh did, or None when another replica holds the turn."""
    async with housekeeping_turn(conn) as ours:
        if not ours:
            return None
        if state.mode is None:
            state.mode = await detect_mode(conn)
        due = time.monotonic() - state.last_maintenance >= MAINTENANCE_EVERY_S
        if maintenance or (maintenance is None and due):
            await maintain(conn, state)
            state.last_maintenance = time.monotonic()
        if maintenance or time.monotonic() - state.last_retention >= RETENTION_EVERY_S:
            removed = await apply_retention(
                conn,
                datetime.now(UTC),
                audit_days=settings.audit_retention_days,
                rejected_days=settings.rejected_retention_days,
            )
            state.last_retention = time.monotonic()
            await _seed(conn, state)
            reports = await delete_old_reports(
                conn, datetime.now(UTC) - timedelta(days=settings.health.report_retention_days)
            )
            if removed.total or reports:
                log.info("audit_retention", ingest_events=removed.ingest_events,
                         rejected_rows=removed.rejected_rows, gateway_reports=reports)  # fmt: skip
        if state.mode is StorageMode.POSTGRESQL:
            report = await refresh_rollup(
                conn, settle_s=settings.rollup_settle_s, limit=settings.rollup_batch
            )
        elif state.mode is StorageMode.TIMESCALEDB:
            report = await refresh_timescale(
                conn, settle_s=settings.rollup_settle_s, limit=settings.rollup_batch,
                max_ranges=settings.refresh_max_ranges,
            )  # fmt: skip
        else:
            return RefreshReport(0)
        await advance_stored_energy(
            conn, settle_s=settings.rollup_settle_s, budget_hours=settings.rollup_batch,
            hold=state.mode is StorageMode.POSTGRESQL, seconds=settings.housekeeping_interval_s,
        )  # fmt: skip
        return report


async def housekeeping_loop(state: StorageState, settings: Settings) -> None:
    """Run `housekeeping_cycle` forever on a dedicated autocommit connection; survive outages."""
    conn: AsyncConnection[Any] | None = None
    try:
        while True:
            try:
                if conn is None or conn.closed:
                    conn = await AsyncConnection.connect(
                        settings.database_url, autocommit=True, application_name="ingestd-housekeeping",
                        connect_timeout=max(1, int(settings.connect_timeout_s)),
                    )  # fmt: skip
                report = await housekeeping_cycle(conn, state, settings)
                state.dirty_buckets = await count_dirty(conn)
                if report and report.buckets:
                    log.info(
                        "hourly_refreshed",
                        buckets=report.buckets,
                        ranges=report.ranges,
                        mode=str(state.mode),
                    )
            except psycopg.Error as exc:
                log.warning("housekeeping_failed", error=type(exc).__name__, detail=str(exc)[:200])
                if conn is not None:
                    with contextlib.suppress(psycopg.Error):
                        await conn.close()
                conn = None
            await asyncio.sleep(settings.housekeeping_interval_s)
    finally:
        if conn is not None:
            with contextlib.suppress(psycopg.Error):
                await conn.close()
