"""The ingest use case: store one authenticated customer's parsed batch.

`ingest_batch` is the whole of it, in one transaction: the rows (measurements: new samples only,
then the hourly buckets they dirty; sites and devices: the full set, absent ones soft-deleted),
the dead letters, and the audit row, which also marks the customer seen. Partitions a
measurement batch needs are created first, in transactions of their own. A refused batch gets
its audit row from `record_refusal`, best effort. HTTP stays in `ingestd.handlers.ingest`; SQL
stays in `ingestd.storage`.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import Executor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import psycopg
import structlog
from fleetcore import BatchType, ParsedBatch, ParsedColumns
from fleetcore.columnar import Column, MeasurementColumns, datetime_from_micros
from fleetcore.limits import MAX_BATCH_ROWS
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from ingestd.auth import Customer
from ingestd.decoding import Chunked
from ingestd.pooled import connection, pooled_transaction, transaction
from ingestd.storage.audit import AuditRecord, record_event, store_rejections
from ingestd.storage.copybuffer import CopyStream, copy_stream
from ingestd.storage.full_sets import store_full_set
from ingestd.storage.state import DirtyBuckets, StorageState
from ingestd.storage.streamed import NotWhole, copy_chunks
from ingestd.storage.writes import (
    SMALL_BATCH_ROWS,
    StoreResult,
    mark_dirty,
    store_measurement_columns,
    store_small_batch,
)

__all__ = [
    "HANDOVER_WAIT_S",
    "Delivery",
    "IngestOutcome",
    "ingest_batch",
    "ingest_chunked",
    "record_refusal",
]

log = structlog.get_logger("ingestd")

Pool = AsyncConnectionPool[AsyncConnection[Any]]


@dataclass(slots=True)
class Delivery:
    """What the HTTP side knows about the delivery, for the audit row (filled in as the request
    is read: a refusal records as much as was known when it happened)."""

    batch_id: uuid.UUID
    started: float  # time.perf_counter() when the request arrived
    wire_bytes: int
    body_bytes: int | None = None
    client_cursor: str | None = None
    repair: bool = False

    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self.started) * 1000


@dataclass(frozen=True, slots=True)
class IngestOutcome:
    accepted: int
    duplicates: int
    rejected: int
    duration_ms: float


Parsed = ParsedBatch[Any] | ParsedColumns
"""A full set's rows (sites, devices), or a measurement batch's columns (either encoding)."""


def _audit(
    customer: Customer,
    kind: BatchType,
    parsed: Parsed,
    delivery: Delivery,
    result: StoreResult | None,
) -> AuditRecord:
    return AuditRecord(
        batch_id=delivery.batch_id,
        customer_id=customer.id,
        batch_type=kind.value,
        wire_bytes=delivery.wire_bytes,
        body_bytes=delivery.body_bytes,
        duration_ms=delivery.elapsed_ms(),
        outcome="rejected_rows" if parsed.rejections else "ok",
        status=200,
        accepted=result.accepted if result else 0,
        duplicates=result.duplicates if result else 0,
        rejected=len(parsed.rejections),
        client_cursor=delivery.client_cursor,
        min_time=parsed.first_time.astimezone(UTC) if parsed.first_time else None,
        max_time=parsed.last_time.astimezone(UTC) if parsed.last_time else None,
        repair=delivery.repair,
    )


async def _store(
    conn: AsyncConnection[Any],
    storage: StorageState,
    customer: Customer,
    kind: BatchType,
    parsed: Parsed,
    delivery: Delivery,
) -> StoreResult:
    """The batch's writes in the fewest round trips: a small measurement batch in one (one
    statement: rows, dirty marks and audit row), a full set of sites or devices in one (one
    statement: upsert, soft delete and audit row), both in autocommit on the pool's connections;
    a large measurement batch by COPY (a stream built from its columns), and a batch with dead
    letters, in a transaction (`ingestd.pooled.transaction`)."""
    buckets = None
    one_statement = True
    if isinstance(parsed, ParsedColumns):
        buckets = await storage.prepare(conn, parsed)
        one_statement = 0 < parsed.valid.rows <= SMALL_BATCH_ROWS
    if one_statement and not parsed.rejections:  # nearly every batch: no transaction block
        return await _store_rows(conn, customer, kind, parsed, delivery, buckets)
    async with transaction(conn):
        if parsed.rejections:  # COPY cannot run in a pipeline; dead letters are rare
            await store_rejections(conn, customer.id, delivery.batch_id, kind, parsed.rejections)
        return await _store_rows(conn, customer, kind, parsed, delivery, buckets)


async def _store_rows(
    conn: AsyncConnection[Any],
    customer: Customer,
    kind: BatchType,
    parsed: Parsed,
    delivery: Delivery,
    buckets: tuple[list[int], list[int]] | None,
) -> StoreResult:
    if isinstance(parsed, ParsedColumns):
        assert buckets is not None
        if 0 < parsed.valid.rows <= SMALL_BATCH_ROWS:
            audit = _audit(customer, kind, parsed, delivery, None)
            return await store_small_batch(conn, parsed.valid, audit, buckets)
        result = await store_measurement_columns(conn, customer.id, parsed.valid)
        if result.accepted:
            await mark_dirty(conn, customer.id, *buckets)
        await record_event(conn, _audit(customer, kind, parsed, delivery, result), seen=True)
        return result
    result = StoreResult(len(parsed.rows), parsed.duplicates)
    audit = _audit(customer, kind, parsed, delivery, result)
    return await store_full_set(conn, kind, parsed.rows, parsed.ids_seen, audit)


async def ingest_batch(
    pool: Pool,
    timeout_s: float,
    storage: StorageState,
    customer: Customer,
    kind: BatchType,
    parsed: Parsed,
    delivery: Delivery,
) -> IngestOutcome:
    """Store the batch, its dead letters and its audit row in one transaction; the connection
    comes from `pool` within `timeout_s` (PoolTimeout past it)."""
    async with connection(pool, timeout_s) as conn:
        result = await _store(conn, storage, customer, kind, parsed, delivery)
    return IngestOutcome(
        result.accepted, result.duplicates, len(parsed.rejections), delivery.elapsed_ms()
    )


@dataclass(frozen=True, slots=True)
class _Laid:
    """A chunk's columns and its COPY tuples."""

    chunk: ParsedColumns
    tuples: CopyStream


HANDOVER_WAIT_S = 0.005
"""How long the decoding job waits, at most, for the event loop to take a chunk it handed over
before it decodes the next (`_ChunkFeed`)."""


class _ChunkFeed:
    """A `Chunked` body's chunks decoded and laid out as COPY tuples one after the other by one
    job in the decoding pool (`run`), each handed to the event loop as soon as it is done, and
    the loop only writes what it is handed to PostgreSQL — no numpy or parsing on the loop while
    the job holds the GIL. Before decoding the next chunk the job waits (at most
    `HANDOVER_WAIT_S`) for the loop to take the one it handed over: the next chunk's decode holds
    the GIL for milliseconds at a time (msgspec's decode is one C call), so the loop, woken to
    take a chunk, waited for it, and PostgreSQL with it — ~2.4 ms between the first chunk laid
    out and its COPY begun, ~0.1 ms with the wait (bench/README.md, issue 26's large batches).
    A chunk that is not taken whole (None) ends the job, as does `stop`."""

    def __init__(self, chunked: Chunked, customer_id: int) -> None:
        self._chunked = chunked
        self._customer_id = customer_id
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[_Laid | BaseException | None] = asyncio.Queue()
        self._stop = threading.Event()
        self._taken = threading.Event()

    @property
    def chunks(self) -> int:
        return len(self._chunked.spans)

    def run(self) -> None:
        """Decode and lay out every chunk in turn (CPU-bound: the decoding pool)."""
        try:
            for i in range(self.chunks):
                if self._stop.is_set():
                    return
                chunk = self._chunked.parse(i)
                laid = None
                if chunk is not None:
                    tuples = copy_stream(
                        chunk.valid, self._customer_id, header=False, trailer=False
                    )
                    laid = _Laid(chunk, tuples)
                self._taken.clear()
                self._loop.call_soon_threadsafe(self._queue.put_nowait, laid)
                if laid is None:
                    return
                if i + 1 < self.chunks:
                    self._taken.wait(HANDOVER_WAIT_S)
        except Exception as exc:  # handed to the loop, which raises it
            self._loop.call_soon_threadsafe(self._queue.put_nowait, exc)

    async def next(self) -> _Laid | None:
        """The next chunk, or None: not taken whole."""
        laid = await self._queue.get()
        self._taken.set()
        if isinstance(laid, BaseException):
            raise laid
        return laid

    def stop(self) -> None:
        self._stop.set()
        self._taken.set()  # a job waiting for the loop to take its chunk stops now


def _joined(parts: list[ParsedColumns]) -> ParsedColumns:
    """Chunks of valid rows as one batch of their keys (time and device_id: what the dirty
    marks and the audit row read), inside the window."""
    times = np.concatenate([p.valid.columns["time"].values for p in parts])
    devices = np.concatenate([p.valid.columns["device_id"].values for p in parts])
    columns = MeasurementColumns(len(times), {"time": Column(times), "device_id": Column(devices)})
    first, last = datetime_from_micros(int(times.min())), datetime_from_micros(int(times.max()))
    return ParsedColumns(columns, [], first, last)


async def _stream(
    conn: AsyncConnection[Any],
    storage: StorageState,
    customer: Customer,
    chunked: Chunked,
    feed: _ChunkFeed,
    delivery: Delivery,
) -> tuple[StoreResult, ParsedColumns] | None:
    """The batch COPYed chunk by chunk as the pool hands them over (PostgreSQL stores chunk i
    while the pool decodes chunk i+1), then its dirty marks and audit row, committed; None with
    nothing stored when a chunk is not taken whole. The partitions of the batch's first and
    last rows are made, and the probe for a re-delivery sent, while the pool decodes the first
    chunk."""
    parts: list[ParsedColumns] = []
    rows = 0
    whole: list[tuple[ParsedColumns, DirtyBuckets]] = []

    async def tuples() -> AsyncIterator[CopyStream]:
        nonlocal rows
        for _ in range(feed.chunks):
            laid = await feed.next()
            if (
                laid is None
                or storage.missing_weeks(laid.chunk)
                or rows + laid.chunk.valid.rows > MAX_BATCH_ROWS
            ):
                raise NotWhole  # the whole-batch way refuses what it refuses, with its answer
            rows += laid.chunk.valid.rows
            parts.append(laid.chunk)
            yield laid.tuples
        # The last chunk is written and PostgreSQL is still storing the ones before (~9 ms of a
        # 5,000-row batch): the batch's columns and dirty buckets are made now, before the COPY
        # is ended, not after it while PostgreSQL waits (~0.5 ms of the request).
        parsed = _joined(parts)
        whole.append((parsed, storage.buckets(parsed)))

    first, last = chunked.edges
    await storage.ensure_weeks(conn, storage.missing_weeks_at(first.time, last.time))
    ends = ((_utc(first.time), first.device_id), (_utc(last.time), last.device_id))
    if not await copy_chunks(conn, customer.id, ends, tuples()):
        return None
    ((parsed, buckets),) = whole
    result = StoreResult(parsed.valid.rows, 0)
    audit = _audit(customer, BatchType.MEASUREMENTS, parsed, delivery, result)
    async with conn.pipeline():  # one round trip: marks, audit row, commit
        await mark_dirty(conn, customer.id, *buckets)
        await record_event(conn, audit, seen=True)
        await conn.commit()
    return result, parsed


async def ingest_chunked(
    pool: Pool,
    timeout_s: float,
    decoders: Executor,
    storage: StorageState,
    customer: Customer,
    chunked: Chunked,
    delivery: Delivery,
) -> tuple[IngestOutcome, Parsed]:
    """A large JSON measurement batch stored as it is decoded (`_stream`, fed by one pool job,
    `_ChunkFeed`); a batch the chunks do not take whole (a refused row, a sample outside the
    window, a key stored already, a week without its partition) is parsed whole and stored as
    `ingest_batch` stores any other. Returns the outcome and the parsed batch (its rejections
    are the answer's; a streamed batch's holds its keys only)."""
    loop = asyncio.get_running_loop()
    feed = _ChunkFeed(chunked, customer.id)
    job = loop.run_in_executor(decoders, feed.run)
    try:
        async with pooled_transaction(pool, timeout_s) as conn:  # _stream commits, or rolls back
            streamed = await _stream(conn, storage, customer, chunked, feed, delivery)
    finally:
        feed.stop()
        await asyncio.wait([job])  # the job's last chunk, whatever became of the COPY
    if streamed is not None:
        result, parsed = streamed
        return IngestOutcome(result.accepted, 0, 0, delivery.elapsed_ms()), parsed
    del feed
    whole = await loop.run_in_executor(decoders, chunked.whole)
    return await ingest_batch(
        pool, timeout_s, storage, customer, BatchType.MEASUREMENTS, whole, delivery
    ), whole


def _utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC)


async def record_refusal(
    pool: Pool,
    timeout_s: float,
    customer: Customer,
    delivery: Delivery,
    *,
    batch_type: str,
    outcome: str,
    status: int,
    error: str,
) -> None:
    """Best effort: a refused batch still gets its audit row when the database is reachable."""
    event = AuditRecord(
        batch_id=delivery.batch_id,
        customer_id=customer.id,
        batch_type=batch_type,
        wire_bytes=delivery.wire_bytes,
        body_bytes=delivery.body_bytes,
        duration_ms=delivery.elapsed_ms(),
        outcome=outcome,
        status=status,
        client_cursor=delivery.client_cursor,
        error=error[:1000],
        repair=delivery.repair,
    )
    try:
        async with pool.connection(timeout=timeout_s) as conn:
            await record_event(conn, event, seen=False)
    except (psycopg.Error, PoolTimeout) as exc:
        log.warning("audit_write_failed", error=type(exc).__name__)
