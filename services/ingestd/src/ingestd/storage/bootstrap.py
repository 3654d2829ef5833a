"""Storage bootstrap: make `fleet.power_measurements_scaled` (the stored rows; readers use the
view `fleet.power_measurements`, docs/STORAGE.md) a time-partitioned table and create the
hourly aggregate — with TimescaleDB where it is available, with native partitioning where not.

Runs after the migrations (`ingestd migrate`, and at `serve` start with
INGESTD_MIGRATE_ON_START), idempotently, under a session advisory lock so several replicas can run
it at once. The migrations create a plain table; the bootstrap turns it into:

- TimescaleDB: a hypertable (chunk interval INGESTD_CHUNK_INTERVAL_HOURS), compressed segmented by
  (customer_id, device_id) ordered by time DESC with a compression policy
  (INGESTD_COMPRESS_AFTER_HOURS), and the continuous aggregates `fleet.hourly_per_device` and
  `fleet.quarter_per_device` (real-time) with their refresh policies;
- plain PostgreSQL: a table partitioned by range on `time` in weekly partitions (existing rows are
  moved over once), the rollup tables `fleet.hourly_rollup` and `fleet.quarter_rollup`, and the
  views `fleet.hourly_per_device` and `fleet.quarter_per_device` that merge the rollups with the
  hours not yet rolled up, computed from raw rows at read time.

Switching an already bootstrapped database from one path to the other is not automatic: the
bootstrap refuses with a message saying so.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from psycopg import AsyncConnection

from ingestd.storage.aggregate import (
    AGGREGATE_IS_CURRENT,
    AGGREGATE_READS_SCALED,
    HOURLY_FROM_RAW,
    MARK_ALL_DIRTY,
    PLAIN_VIEW,
    ROLLUP_COVERING,
    ROLLUP_COVERING_DROP,
    ROLLUP_KEY_COVERS,
    ROLLUP_KEY_SWAP,
    ROLLUP_TABLE,
    TIMESCALE_CAGG,
)
from ingestd.storage.demand import create_demand_functions
from ingestd.storage.energy import create_energy_functions
from ingestd.storage.energy_upkeep import timescale_store
from ingestd.storage.layout import STORED_TABLE
from ingestd.storage.locks import BOOTSTRAP_LOCK, session_lock
from ingestd.storage.partitions import WEEK, ensure_partitions, partition_existing_table
from ingestd.storage.quarters import (
    PLAIN_QUARTER_VIEW,
    QUARTER_FROM_RAW,
    QUARTER_ROLLUP_TABLE,
    TIMESCALE_QUARTER_CAGG,
)
from ingestd.storage.revisions import create_revision_functions
from ingestd.storage.stored_energy import create_stored_energy_functions
from ingestd.storage.totals import create_totals_functions

__all__ = [
    "BootstrapError",
    "StorageMode",
    "StoragePlan",
    "bootstrap_database",
    "bootstrap_storage",
    "detect_mode",
    "timescale_available",
]

log = structlog.get_logger("ingestd.storage")


class StorageMode(enum.StrEnum):
    TIMESCALEDB = "timescaledb"
    POSTGRESQL = "postgresql"


class BootstrapError(RuntimeError):
    """The storage cannot be bootstrapped as configured; the message says why."""


@dataclass(frozen=True, slots=True)
class StoragePlan:
    """Storage settings (INGESTD_* variables, see README)."""

    timescaledb: str = "auto"  # auto | on | off
    chunk_interval: timedelta = timedelta(hours=16)
    compress_after: timedelta = timedelta(hours=1)
    compress_schedule: timedelta = timedelta(hours=1)
    refresh_start_offset: timedelta = timedelta(days=30)
    refresh_end_offset: timedelta = timedelta(hours=1)
    refresh_schedule: timedelta = timedelta(hours=1)
    partitions_ahead: int = 4
    retention: timedelta | None = None
    notes: list[str] = field(default_factory=list)


async def _scalar(conn: AsyncConnection[Any], query: str, params: tuple[Any, ...] = ()) -> Any:
    cur = await conn.execute(query, params)
    row = await cur.fetchone()
    return row[0] if row else None


TIMESCALE_USABLE = """
SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb')
    OR (EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb')
        AND current_setting('shared_preload_libraries') ~ 'timescaledb')
"""


async def timescale_available(conn: AsyncConnection[Any]) -> bool:
    """TimescaleDB is installed on the server *and* preloaded (it cannot be created otherwise)."""
    return bool(await _scalar(conn, TIMESCALE_USABLE))


async def _is_hypertable(conn: AsyncConnection[Any]) -> bool:
    if not await _scalar(conn, "SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'"):
        return False
    return bool(
        await _scalar(
            conn,
            """SELECT 1 FROM timescaledb_information.hypertables
               WHERE hypertable_schema = 'fleet' AND hypertable_name = 'power_measurements_scaled'""",
        )
    )


async def _relkind(conn: AsyncConnection[Any], name: str) -> str | None:
    value = await _scalar(
        conn, "SELECT relkind::text FROM pg_class WHERE oid = to_regclass(%s)", (name,)
    )
    return str(value) if value is not None else None


async def detect_mode(conn: AsyncConnection[Any]) -> StorageMode | None:
    """The storage path this database was bootstrapped for, or None when not bootstrapped."""
    if await _is_hypertable(conn):
        return StorageMode.TIMESCALEDB
    if await _relkind(conn, STORED_TABLE) == "p" and await _relkind(
        conn, "fleet.hourly_per_device"
    ):
        return StorageMode.POSTGRESQL
    return None


async def bootstrap_storage(conn: AsyncConnection[Any], plan: StoragePlan) -> StorageMode:
    """Bootstrap (idempotently) and return the storage mode. `conn` must be in autocommit mode."""
    async with session_lock(conn, BOOTSTRAP_LOCK):
        available = await timescale_available(conn)
        if plan.timescaledb == "on" and not available:
            raise BootstrapError(
                "INGESTD_TIMESCALEDB=on but the timescaledb extension is not installed on the server "
                "or not in its shared_preload_libraries"
            )
        use_timescale = plan.timescaledb == "on" or (plan.timescaledb == "auto" and available)
        current = await detect_mode(conn)
        if use_timescale and current is None and await _relkind(conn, STORED_TABLE) == "p":
            raise BootstrapError(
                "fleet.power_measurements was bootstrapped as a partitioned table without TimescaleDB; "
                "converting it to a hypertable is a manual migration (or set INGESTD_TIMESCALEDB=off)"
            )
        if current is StorageMode.POSTGRESQL and use_timescale:
            raise BootstrapError(
                "this database was bootstrapped without TimescaleDB (partitioned table); converting it "
                "is a manual migration — set INGESTD_TIMESCALEDB=off to keep the plain path"
            )
        if use_timescale:
            await _bootstrap_timescale(conn, plan)
            return StorageMode.TIMESCALEDB
        await _bootstrap_plain(conn, plan)
        return StorageMode.POSTGRESQL


async def bootstrap_database(database_url: str, plan: StoragePlan) -> StorageMode:
    """Connect, bootstrap, disconnect: what `ingestd migrate` runs after the migrations."""
    async with await AsyncConnection.connect(database_url, autocommit=True) as conn:
        return await bootstrap_storage(conn, plan)


async def _bootstrap_timescale(conn: AsyncConnection[Any], plan: StoragePlan) -> None:
    await conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
    had_rows = bool(await _scalar(conn, f"SELECT EXISTS (SELECT 1 FROM {STORED_TABLE})"))
    await conn.execute(
        "SELECT create_hypertable(%s, by_range('time', %s::interval), "
        "if_not_exists => true, migrate_data => true)",
        (STORED_TABLE, plan.chunk_interval),
    )
    compressed = await _scalar(
        conn,
        """SELECT compression_enabled FROM timescaledb_information.hypertables
           WHERE hypertable_schema = 'fleet' AND hypertable_name = 'power_measurements_scaled'""",
    )
    if not compressed:
        await conn.execute(
            f"""ALTER TABLE {STORED_TABLE} SET (
                   timescaledb.compress,
                   timescaledb.compress_segmentby = 'customer_id, device_id',
                   timescaledb.compress_orderby = 'time DESC')"""
        )
    await _compression_policy(conn, plan)
    if await _relkind(conn, "fleet.hourly_per_device"):
        reason = None
        if not await _scalar(conn, AGGREGATE_IS_CURRENT):
            reason = "no energy counter summaries (older ingestd)"
        elif not await _scalar(conn, AGGREGATE_READS_SCALED):
            reason = "made before the scaled-integer layout (migration 0008)"
        if reason:
            log.warning("hourly_aggregate_rebuilt", reason=reason)
            await conn.execute("DROP MATERIALIZED VIEW fleet.hourly_per_device")
    if not await _relkind(conn, "fleet.hourly_per_device"):
        await conn.execute(TIMESCALE_CAGG)
        if had_rows:  # the policy only looks back start_offset: materialize the whole history once
            await conn.execute(
                "CALL refresh_continuous_aggregate('fleet.hourly_per_device', NULL, %s)",
                (datetime.now(UTC) - plan.refresh_end_offset,),
            )
    if not await _relkind(conn, "fleet.quarter_per_device"):
        await conn.execute(TIMESCALE_QUARTER_CAGG)
        if had_rows:
            await conn.execute(
                "CALL refresh_continuous_aggregate('fleet.quarter_per_device', NULL, %s)",
                (datetime.now(UTC) - plan.refresh_end_offset,),
            )
    for aggregate in ("fleet.hourly_per_device", "fleet.quarter_per_device"):
        await conn.execute(
            """SELECT add_continuous_aggregate_policy(%s::regclass,
                   start_offset => %s::interval, end_offset => %s::interval,
                   schedule_interval => %s::interval, if_not_exists => true)""",
            (aggregate, plan.refresh_start_offset, plan.refresh_end_offset, plan.refresh_schedule),
        )
    await create_energy_functions(conn)
    await create_stored_energy_functions(conn, **await timescale_store(conn))
    await create_demand_functions(conn)
    await create_totals_functions(conn)
    await create_revision_functions(conn, "fleet.hourly_per_device")
    log.info("storage_bootstrapped", mode="timescaledb")


COMPRESSION_JOB = """
SELECT job_id FROM timescaledb_information.jobs
WHERE proc_name = 'policy_compression' AND hypertable_schema = 'fleet'
  AND hypertable_name = 'power_measurements_scaled'
"""
ALTER_COMPRESSION_JOB = """
SELECT alter_job(j.job_id, schedule_interval => %s::interval,
                 config => jsonb_set(j.config, '{compress_after}', to_jsonb(%s::interval::text)))
FROM timescaledb_information.jobs j WHERE j.job_id = %s
"""


async def _compression_policy(conn: AsyncConnection[Any], plan: StoragePlan) -> None:
    """Chunks of `plan.chunk_interval` (new chunks: existing ones keep their range), compressed
    `plan.compress_after` after they end by a job every `plan.compress_schedule` — the
    configured values, also on a database bootstrapped with others."""
    await conn.execute(
        "SELECT set_chunk_time_interval(%s, %s::interval)", (STORED_TABLE, plan.chunk_interval)
    )
    job = await _scalar(conn, COMPRESSION_JOB)
    if job is None:
        await conn.execute(
            "SELECT add_compression_policy(%s, %s::interval, schedule_interval => %s::interval)",
            (STORED_TABLE, plan.compress_after, plan.compress_schedule),
        )
    else:
        await conn.execute(
            ALTER_COMPRESSION_JOB, (plan.compress_schedule, plan.compress_after, job)
        )


async def _bootstrap_plain(conn: AsyncConnection[Any], plan: StoragePlan) -> None:
    async with conn.transaction():
        if await _relkind(conn, STORED_TABLE) == "r":
            await partition_existing_table(conn)
        rollup_existed = bool(await _relkind(conn, "fleet.hourly_rollup"))
        if rollup_existed and not await _scalar(conn, AGGREGATE_IS_CURRENT):
            log.warning(
                "hourly_aggregate_rebuilt", reason="no energy counter summaries (older ingestd)"
            )
            await conn.execute("DROP VIEW fleet.hourly_per_device")
            await conn.execute("DROP FUNCTION IF EXISTS fleet.hourly_from_raw")
            await conn.execute("DROP TABLE fleet.hourly_rollup")
            rollup_existed = False
        quarters_existed = bool(await _relkind(conn, "fleet.quarter_rollup"))
        await conn.execute(ROLLUP_TABLE)
        await conn.execute(HOURLY_FROM_RAW)
        await conn.execute(PLAIN_VIEW)
        await conn.execute(QUARTER_ROLLUP_TABLE)
        await conn.execute(QUARTER_FROM_RAW)
        await conn.execute(PLAIN_QUARTER_VIEW)
        if not rollup_existed or not quarters_existed:
            # rows stored before the rollup (or its quarters) existed: correct at once through
            # the views, recomputed by the housekeeping
            await conn.execute(MARK_ALL_DIRTY)
        await create_energy_functions(conn)
        await create_stored_energy_functions(conn, "fleet.hourly_rollup")
        await create_demand_functions(conn)
        await create_totals_functions(conn)
        await create_revision_functions(conn, "fleet.hourly_rollup")
    if not await _scalar(conn, ROLLUP_KEY_COVERS):  # outside a transaction: CONCURRENTLY
        log.info("hourly_rollup_key_rebuilt", reason="covering the reads' columns")
        await conn.execute(ROLLUP_COVERING_DROP)  # one left invalid by a failed build
        await conn.execute(ROLLUP_COVERING)
        await conn.execute(ROLLUP_KEY_SWAP)
    now = datetime.now(UTC)
    await ensure_partitions(conn, [now + WEEK * i for i in range(plan.partitions_ahead + 1)])
    log.info("storage_bootstrapped", mode="postgresql")
