"""What the ingest path and housekeeping know about the storage between batches.

`StorageState` holds the storage mode (detected at start, or by housekeeping once someone runs
`ingestd migrate`) and the weekly partitions known to exist (plain PostgreSQL), so that a batch
pays for a partition check only when it reaches a week not seen before. `prepare` is the one
call a measurement batch makes here: it creates the partitions the batch needs and says which
hourly buckets it must mark dirty.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt
import structlog
from fleetcore import ParsedColumns
from fleetcore.columnar import datetime_from_micros, micros_from_datetime
from psycopg import AsyncConnection

from ingestd.storage.bootstrap import StorageMode, StoragePlan, bootstrap_storage, detect_mode
from ingestd.storage.partitions import WEEK, ensure_partitions, week_start

__all__ = [
    "DirtyBuckets",
    "StorageState",
    "open_storage",
    "touched_buckets",
]

log = structlog.get_logger("ingestd.storage")

_HOUR_S = 3600
_SUPERSET_LIMIT = 512
_SET_ROWS = 512  # up to this many rows, distinct values through a set (see touched_buckets)

DirtyBuckets = tuple[list[int], list[int]]
"""(device ids, hour numbers since the epoch) as two parallel lists."""


def touched_buckets(batch: ParsedColumns, before: datetime | None = None) -> DirtyBuckets:
    """(device_id, hour number since the epoch) pairs covering the batch, as two parallel lists
    in (device, hour) order, computed on its arrays.

    With `before`, only samples older than it count (TimescaleDB: the policy covers the rest).
    A batch whose devices x hours are few (the steady case: every device, the last hour or two)
    marks that whole grid — a superset, which is harmless (a bucket without new rows recomputes
    to what it was) and needs no per-row work; other batches get their exact buckets. A batch of
    a few hundred rows is counted with a set: numpy's fixed cost per call (a `unique` over a
    two-column matrix ~250 µs of a 27-row request in a running ingestd) is more than its rows'.
    """
    if before is not None and batch.last_time is not None and batch.last_time < before:
        before = None  # every sample is older: all count
    devices = batch.valid.columns["device_id"].values
    micros = batch.valid.columns["time"].values
    if before is None and batch.first_time is not None and batch.last_time is not None:
        first_hour = int(batch.first_time.timestamp()) // _HOUR_S
        hours = range(first_hour, int(batch.last_time.timestamp()) // _HOUR_S + 1)
        if len(hours) <= _SUPERSET_LIMIT:
            unique = _unique(devices)
            if len(unique) * len(hours) <= _SUPERSET_LIMIT:
                return [d for d in unique for _ in hours], [h for _ in unique for h in hours]
    if before is not None:
        keep = micros < micros_from_datetime(before)
        devices, micros = devices[keep], micros[keep]
    hour_numbers = micros // (_HOUR_S * 1_000_000)
    if len(devices) <= _SET_ROWS:
        pairs = sorted(set(zip(devices.tolist(), hour_numbers.tolist(), strict=True)))
        return [d for d, _ in pairs], [h for _, h in pairs]
    grid = np.unique(np.stack([devices, hour_numbers], axis=1), axis=0)
    return grid[:, 0].tolist(), grid[:, 1].tolist()


def _unique(values: npt.NDArray[Any]) -> list[int]:
    """The distinct values, ascending."""
    if len(values) <= _SET_ROWS:
        return sorted(set(values.tolist()))
    return list(np.unique(values).tolist())


Batch = ParsedColumns
"""A measurement batch, whatever its encoding (`ingestd.decoding`)."""


def _weeks_of(batch: Batch) -> set[datetime]:
    days = np.unique(batch.valid.columns["time"].values // (86_400 * 1_000_000))
    return {week_start(datetime_from_micros(int(d) * 86_400 * 1_000_000)) for d in days}


@dataclass
class StorageState:
    """The storage mode, and the weeks that have a partition (plain PostgreSQL)."""

    mode: StorageMode | None
    plan: StoragePlan
    known_weeks: set[datetime] = field(default_factory=set)
    last_maintenance: float = float("-inf")
    last_retention: float = float("-inf")
    last_seed: datetime | None = None  # the housekeeping's last frontier seed
    last_full_seed: datetime | None = None  # ... over the whole last hour's rows
    dirty_buckets: int | None = None  # hours waiting for the rollup, as of the last round

    def dirty_horizon(self) -> datetime | None:
        """Samples older than this need a dirty mark (None: all of them). TimescaleDB: those
        before the current hour. Their hours may be materialized already (by the policy, or by the
        housekeeping refreshing an ended hour, which moves the aggregate's watermark to the hour's
        end, so real-time aggregation no longer covers them): marked, the housekeeping refreshes
        them within a cycle and records the corrections they make (`storage.revisions`). The
        steady flow marks each device's last hour once, in the first minute of the next."""
        if self.mode is StorageMode.TIMESCALEDB:
            now = datetime.now(UTC)
            return now.replace(minute=0, second=0, microsecond=0)
        return None

    def buckets(self, batch: Batch) -> DirtyBuckets:
        """The hourly buckets of the batch to mark dirty (none before the storage is bootstrapped:
        the bootstrap marks every stored hour when it creates the rollup)."""
        if self.mode is None or batch.first_time is None or batch.last_time is None:
            return [], []
        horizon = self.dirty_horizon()
        if horizon is not None and batch.first_time >= horizon:
            return [], []
        return touched_buckets(batch, horizon)

    def missing_weeks(self, batch: Batch) -> set[datetime]:
        """Weeks the batch needs that are not known to have a partition (plain path only)."""
        first, last = batch.first_time, batch.last_time
        if self.mode is not StorageMode.POSTGRESQL or first is None or last is None:
            return set()
        if last - first <= WEEK:
            return {week_start(first), week_start(last)} - self.known_weeks
        return _weeks_of(batch) - self.known_weeks

    def missing_weeks_at(self, *moments: datetime) -> set[datetime]:
        """The weeks of these sample times that are not known to have a partition (plain path
        only)."""
        if self.mode is not StorageMode.POSTGRESQL:
            return set()
        return {week_start(m) for m in moments} - self.known_weeks

    async def ensure_weeks(self, conn: AsyncConnection[Any], weeks: set[datetime]) -> None:
        if weeks:
            created = await ensure_partitions(conn, weeks)
            if created:
                log.info("partitions_created", weeks=[w.date().isoformat() for w in created])
            self.known_weeks |= weeks

    async def prepare(self, conn: AsyncConnection[Any], batch: Batch) -> DirtyBuckets:
        """Create the partitions the measurement batch needs (each in a transaction of its own,
        before the batch's); return the buckets the batch must mark dirty."""
        await self.ensure_weeks(conn, self.missing_weeks(batch))
        return self.buckets(batch)


async def open_storage(
    conn: AsyncConnection[Any], plan: StoragePlan, *, bootstrap: bool
) -> StorageState:
    """Detect (and with `bootstrap`, first set up) the storage; `conn` must be autocommit."""
    if bootstrap:
        await bootstrap_storage(conn, plan)
    return StorageState(mode=await detect_mode(conn), plan=plan)
