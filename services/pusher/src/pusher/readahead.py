"""Reading ahead: the next measurement batch is read and compressed while the current one is on
the wire, so a backlog drains at the ingest rate rather than at ingest plus read plus compress.
The batch is read in the format the daemon asks for (the client's negotiation says which):
columnar (`source/columns.py`) once ingestd takes it, gzip JSON built by PostgreSQL otherwise.

A batch read ahead is only ever a guess at the next one: it is used when it still starts at the
stored cursor with no more rows than the current batch size (a 413 halves the size, a restored
database resets the cursor) in the format asked for now, and discarded otherwise. Discarding
cancels the read and waits for it, so the connection is free again before anything else uses it.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Any

import psycopg
from fleetcore import PushCursor
from fleetcore.protocol import WireFormat

from pusher import source
from pusher.delivery.wire import WireBody, encode
from pusher.source import MeasurementBatch

__all__ = ["PreparedBatch", "ReadAhead", "discard"]


@dataclass(frozen=True, slots=True)
class PreparedBatch:
    """A batch as read (its uncompressed body dropped), and its body as it goes on the wire
    (empty when the batch is)."""

    batch: MeasurementBatch
    wire: WireBody


async def discard(task: asyncio.Task[Any]) -> None:
    """Cancel a read-ahead and wait for it, so the connection is free again."""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, psycopg.Error):
        await task


def _fits(prepared: PreparedBatch, cursor: PushCursor, size: int, fmt: WireFormat) -> bool:
    batch = prepared.batch
    return batch.start == cursor and batch.limit <= size and batch.format is fmt


class ReadAhead:
    """Starts batch reads on one connection and holds the one read ahead between two rounds;
    JSON bodies are gzip'd at `gzip_level`, columnar ones built by `build`."""

    def __init__(self, gzip_level: int, build: source.BatchBuilder) -> None:
        self._gzip_level = gzip_level
        self._build = build
        self._held: asyncio.Task[PreparedBatch] | None = None

    def start(
        self, conn: psycopg.AsyncConnection[Any], after: PushCursor, size: int, fmt: WireFormat
    ) -> asyncio.Task[PreparedBatch]:
        """Read up to `size` rows after `after` in `fmt` and compress them, in the background."""
        return asyncio.create_task(self._prepare(conn, after, size, fmt))

    async def _prepare(
        self, conn: psycopg.AsyncConnection[Any], after: PushCursor, size: int, fmt: WireFormat
    ) -> PreparedBatch:
        if fmt is WireFormat.COLUMNAR:
            batch = await source.read_measurement_columns(conn, after, size, self._build)
        else:
            batch = await source.read_measurements(conn, after, size)
        if not batch.count:
            return PreparedBatch(batch, WireBody(b""))
        wire = await encode(batch.body, batch.format, self._gzip_level)
        return PreparedBatch(batch.without_body(), wire)

    def hold(self, task: asyncio.Task[PreparedBatch]) -> None:
        """Keep `task` for the next round (measurements stay due: a backlog goes on)."""
        self._held = task

    async def next(
        self, conn: psycopg.AsyncConnection[Any], cursor: PushCursor, size: int, fmt: WireFormat
    ) -> asyncio.Task[PreparedBatch]:
        """The batch held from the previous round if it still starts at `cursor`, fits `size`
        and is in `fmt`; otherwise a new read."""
        held = await self._take_held(cursor, size, fmt)
        return held if held is not None else self.start(conn, cursor, size, fmt)

    async def _take_held(
        self, cursor: PushCursor, size: int, fmt: WireFormat
    ) -> asyncio.Task[PreparedBatch] | None:
        task, self._held = self._held, None
        if task is None:
            return None
        if task.done() and not task.cancelled() and task.exception() is None:
            if _fits(task.result(), cursor, size, fmt):
                return task
        elif not task.done():
            with contextlib.suppress(asyncio.CancelledError, psycopg.Error):
                if _fits(await task, cursor, size, fmt):
                    return task
                return None
            return None
        await discard(task)
        return None

    async def close(self) -> None:
        """Drop what is held (the session ends; its connection is about to close)."""
        task, self._held = self._held, None
        if task is not None:
            await discard(task)
