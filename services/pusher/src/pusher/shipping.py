"""Shipping one resource: the full set of sites or devices when it changed, or measurement
batches from the cursor, each sent and its answer handed to `outcomes.py`.

The daemon's tick calls `Shipper.full_set` or `Shipper.measurements` for each resource that is
due; each returns when the resource is due next — the next tick, now again while a backlog
drains (the batch read ahead carried over, `readahead.py`), or the retry policy's time after a
failure (`Outcomes.not_delivered`). A batch not delivered leaves the cursor where it was.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import psycopg
from fleetcore.answers import IngestAnswer
from fleetcore.protocol import BatchType, WireFormat

from pusher import source
from pusher.delivery import IngestClient, WireBody, encode
from pusher.errors import DeliveryError
from pusher.ops.memory import BacklogRelease
from pusher.ops.metrics import PusherMetrics
from pusher.ops.progress import PushProgress
from pusher.outcomes import Outcomes
from pusher.readahead import PreparedBatch, ReadAhead, discard
from pusher.settings import Settings
from pusher.source import FullSet, MeasurementBatch
from pusher.source.digest import sha256_digest
from pusher.state import PushState

__all__ = ["Shipper"]


class Shipper:
    """Sends each resource's batches and keeps the books of their answers."""

    def __init__(
        self,
        settings: Settings,
        state: PushState,
        metrics: PusherMetrics,
        progress: PushProgress,
        outcomes: Outcomes,
    ) -> None:
        self.settings = settings
        self.state = state
        self.metrics = metrics
        self.progress = progress
        self.outcomes = outcomes
        self.memory = BacklogRelease()

    async def full_set(
        self,
        conn: psycopg.AsyncConnection[Any],
        client: IngestClient,
        resource: BatchType,
        next_tick: float,
    ) -> float:
        """Send the full set when it differs from the one ingestd last accepted, or when that one
        is older than PUSHER_FULL_SET_INTERVAL_S (so soft-deletes and last-seen stay right even
        if the centre lost something); otherwise nothing goes on the wire. Returns when the
        resource is due next."""
        reader = source.read_sites if resource is BatchType.SITES else source.read_devices
        full: FullSet = await reader(conn)
        self.metrics.batch_size.labels(resource.value).set(full.count)
        digest = sha256_digest(full.body)
        if self.state[resource].full_set_current(digest, self.settings.full_set_interval_s):
            self.progress.full_set(resource, full, delivered=True)
            return next_tick
        started = time.perf_counter()
        wire = await encode(full.body, WireFormat.JSON, self.settings.gzip_level)
        label = full.cursor_label(resource.value)
        answer = await self._deliver(conn, client, resource, wire, label, full.count, full=full)
        if not isinstance(answer, IngestAnswer):
            return answer
        await self.outcomes.delivered(
            conn,
            resource,
            answer,
            rows=full.count,
            cursor=None,
            newest=None,
            wire=len(wire.data),
            raw=len(full.body),
            started=started,
            sent_bytes=client.sent_bytes,
            full=full,
            digest=digest,
        )
        return next_tick

    async def measurements(
        self,
        conn: psycopg.AsyncConnection[Any],
        client: IngestClient,
        read_ahead: ReadAhead,
        stop: asyncio.Event,
        next_tick: float,
    ) -> float:
        """Up to N batches from the cursor. Returns when measurements are due next: now when
        the backlog goes on."""
        resource = BatchType.MEASUREMENTS
        n = self.settings.max_batches_per_tick
        state = self.state[resource]
        pending: asyncio.Task[PreparedBatch] | None = await read_ahead.next(
            conn, state.cursor, state.batch_size, client.format
        )
        try:
            for index in range(n):
                assert pending is not None
                prepared = await pending
                pending = None
                batch = prepared.batch
                self.memory.batch_read(batch.full)
                if batch.count == 0:
                    return next_tick
                if batch.full and not stop.is_set():
                    size = self.state[resource].batch_size
                    pending = read_ahead.start(conn, batch.end, size, client.format)
                if batch.sent == 0:
                    await self.outcomes.only_uncarriable(conn, batch)
                else:
                    retry_at = await self._send(conn, client, prepared)
                    if retry_at is not None:
                        return retry_at
                if not batch.full:
                    return next_tick
                if stop.is_set() or index + 1 == n:
                    break
            # A backlog: measurements stay due, and the batch read ahead carries over.
            due = time.monotonic()
            if pending is not None:
                read_ahead.hold(pending)
                pending = None
            return due
        finally:
            if pending is not None:
                await discard(pending)

    async def _send(
        self, conn: psycopg.AsyncConnection[Any], client: IngestClient, prepared: PreparedBatch
    ) -> float | None:
        """Send one measurements batch and keep the books of the answer; None if delivered,
        else when measurements are due again."""
        resource = BatchType.MEASUREMENTS
        batch = prepared.batch
        started = time.perf_counter()
        answer = await self._deliver(
            conn, client, resource, prepared.wire, batch.end.encode(), batch.sent, batch=batch
        )
        if not isinstance(answer, IngestAnswer):
            return answer
        await self.outcomes.delivered(
            conn,
            resource,
            answer,
            rows=batch.sent,
            cursor=batch.end,
            newest=batch.newest_received_at,
            wire=len(prepared.wire.data),
            raw=batch.body_bytes,
            started=started,
            sent_bytes=client.sent_bytes,
            batch=batch,
            media_type=batch.format,
        )
        return None

    async def _deliver(
        self,
        conn: psycopg.AsyncConnection[Any],
        client: IngestClient,
        resource: BatchType,
        wire: WireBody,
        cursor: str,
        rows: int,
        *,
        batch: MeasurementBatch | None = None,
        full: FullSet | None = None,
    ) -> IngestAnswer | float:
        """Send one batch: ingestd's answer, or when it was not delivered, the resource's next
        due time (the books kept by `Outcomes.not_delivered`)."""
        try:
            return await client.send(resource.value, wire, cursor, rows=rows)
        except DeliveryError as exc:
            return await self.outcomes.not_delivered(
                conn, resource, exc, batch=batch, full=full, wire_bytes=len(wire.data)
            )
