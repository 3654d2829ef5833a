"""Storage upkeep that runs beside the ingest path.

`StorageState` is what the ingest path needs to know about storage (its mode and the weekly
partitions known to exist). `housekeeping_cycle` is one round of upkeep, run every
INGESTD_HOUSEKEEPING_INTERVAL_S by `housekeeping_loop` on a connection of its own; the replicas
take turns through an advisory lock, so one round runs at a time across the deployment:

- every round: recompute marked hourly buckets (plain rollup, or TimescaleDB refresh of old
  buckets);
- every hour: create the weekly partitions ahead (plain) and apply raw-data retention (drop
  weekly partitions, or `drop_chunks` on TimescaleDB). The hourly aggregate is never touched.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg
import structlog
from fleetcore import MeasurementRow, ParsedBatch
from psycopg import AsyncConnection

from ingestd.settings import Settings
from ingestd.storage import StorageMode, bootstrap_storage, detect_mode
from ingestd.storage.partitions import WEEK, drop_partitions_before, ensure_partitions, week_start
from ingestd.storage.rollup import RefreshReport, refresh_rollup, refresh_timescale, touched_buckets

__all__ = ["StorageState", "housekeeping_cycle", "housekeeping_loop", "open_storage"]

log = structlog.get_logger("ingestd.housekeeping")

HOUSEKEEPING_LOCK = 0x466C_6565_7402
MAINTENANCE_EVERY_S = 3600.0


@dataclass
class StorageState:
    """The storage mode, and the weeks that have a partition (plain PostgreSQL)."""

    mode: StorageMode | None
    settings: Settings
    known_weeks: set[datetime] = field(default_factory=set)
    last_maintenance: float = float("-inf")
    dirty_buckets: int | None = None  # hours waiting for the rollup, as of the last round

    def dirty_horizon(self) -> datetime | None:
        """Samples older than this need a dirty mark (None: all of them)."""
        if self.mode is StorageMode.TIMESCALEDB:
            plan = self.settings.storage
            return datetime.now(UTC) - plan.refresh_start_offset + plan.refresh_schedule
        return None

    def buckets(self, batch: ParsedBatch[MeasurementRow]) -> tuple[list[int], list[int]]:
        """The hourly buckets of the batch to mark dirty (none before the storage is bootstrapped:
        the bootstrap marks every stored hour when it creates the rollup)."""
        if self.mode is None or batch.first_time is None or batch.last_time is None:
            return [], []
        horizon = self.dirty_horizon()
        if horizon is not None and batch.first_time >= horizon:
            return [], []
        return touched_buckets(batch.rows, horizon, (batch.first_time, batch.last_time))

    def missing_weeks(self, batch: ParsedBatch[MeasurementRow]) -> set[datetime]:
        """Weeks the batch needs that are not known to have a partition (plain path only)."""
        first, last = batch.first_time, batch.last_time
        if self.mode is not StorageMode.POSTGRESQL or first is None or last is None:
            return set()
        if last - first <= WEEK:
            weeks = {week_start(first), week_start(last)}
        else:
            weeks = {week_start(r.time) for r in batch.rows}
        return weeks - self.known_weeks

    async def ensure_weeks(self, conn: AsyncConnection[Any], weeks: set[datetime]) -> None:
        if weeks:
            created = await ensure_partitions(conn, weeks)
            if created:
                log.info("partitions_created", weeks=[w.date().isoformat() for w in created])
            self.known_weeks |= weeks


async def open_storage(
    conn: AsyncConnection[Any], settings: Settings, *, bootstrap: bool
) -> StorageState:
    """Detect (and with `bootstrap`, first set up) the storage; `conn` must be autocommit."""
    if bootstrap:
        await bootstrap_storage(conn, settings.storage)
    return StorageState(mode=await detect_mode(conn), settings=settings)


async def _maintenance(conn: AsyncConnection[Any], state: StorageState) -> None:
    plan = state.settings.storage
    now = datetime.now(UTC)
    if state.mode is StorageMode.POSTGRESQL:
        created = await ensure_partitions(
            conn, [now + WEEK * i for i in range(plan.partitions_ahead + 1)]
        )
        if created:
            log.info("partitions_created", weeks=[w.date().isoformat() for w in created])
    if plan.retention is None:
        return
    cutoff = now - plan.retention
    if state.mode is StorageMode.POSTGRESQL:
        dropped = await drop_partitions_before(conn, cutoff)
        state.known_weeks = {w for w in state.known_weeks if w + WEEK > cutoff}
    elif state.mode is StorageMode.TIMESCALEDB:
        cur = await conn.execute(
            "SELECT drop_chunks('fleet.power_measurements', older_than => %s)", (cutoff,)
        )
        dropped = [str(row[0]) for row in await cur.fetchall()]
    else:
        return
    if dropped:
        log.info("retention_dropped", before=cutoff.isoformat(), dropped=dropped)


async def housekeeping_cycle(
    conn: AsyncConnection[Any], state: StorageState, *, maintenance: bool | None = None
) -> RefreshReport | None:
    """One round; returns what the refresh did, or None when another replica holds the turn."""
    settings = state.settings
    cur = await conn.execute("SELECT pg_try_advisory_lock(%s)", (HOUSEKEEPING_LOCK,))
    row = await cur.fetchone()
    if not (row and row[0]):
        return None
    try:
        if state.mode is None:
            state.mode = await detect_mode(conn)
        due = time.monotonic() - state.last_maintenance >= MAINTENANCE_EVERY_S
        if maintenance or (maintenance is None and due):
            await _maintenance(conn, state)
            state.last_maintenance = time.monotonic()
        if state.mode is StorageMode.POSTGRESQL:
            return await refresh_rollup(
                conn, settle_s=settings.rollup_settle_s, limit=settings.rollup_batch
            )
        if state.mode is StorageMode.TIMESCALEDB:
            return await refresh_timescale(
                conn, settle_s=settings.rollup_settle_s, limit=settings.rollup_batch,
                max_ranges=settings.refresh_max_ranges,
            )  # fmt: skip
        return RefreshReport(0)
    finally:
        await conn.execute("SELECT pg_advisory_unlock(%s)", (HOUSEKEEPING_LOCK,))


async def housekeeping_loop(state: StorageState) -> None:
    """Run `housekeeping_cycle` forever on a dedicated autocommit connection; survive outages."""
    settings = state.settings
    conn: AsyncConnection[Any] | None = None
    try:
        while True:
            try:
                if conn is None or conn.closed:
                    conn = await AsyncConnection.connect(
                        settings.database_url, autocommit=True, application_name="ingestd-housekeeping",
                        connect_timeout=max(1, int(settings.connect_timeout_s)),
                    )  # fmt: skip
                report = await housekeeping_cycle(conn, state)
                cur = await conn.execute("SELECT count(*) FROM fleet.hourly_dirty")
                row = await cur.fetchone()
                state.dirty_buckets = int(row[0]) if row else None
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
