"""A large measurement batch stored as it is decoded: COPY chunk by chunk, so PostgreSQL stores
one chunk while ingestd decodes the next (`ingestd.ingest.ingest_chunked` drives it; issue 26's
large-batch ratio). Anything the chunks do not take whole leaves nothing stored and the batch to
the whole-batch path of `storage.writes`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import psycopg
from fleetcore import MeasurementColumns
from fleetcore.columnar import datetime_from_micros
from psycopg import AsyncConnection

from ingestd.storage.copybuffer import COPY_TRAILER, copy_stream
from ingestd.storage.writes import COPY_MEASUREMENTS, PROBE_EXISTING

__all__ = ["NotWhole", "copy_chunks"]


class NotWhole(Exception):
    """A chunk of a streamed batch that the stream does not take (`copy_chunks`)."""


async def _probe(conn: AsyncConnection[Any], customer_id: int, batch: MeasurementColumns) -> bool:
    """Whether the batch's first or last key is stored already (an obvious re-delivery)."""
    times = batch.columns["time"].values
    devices = batch.columns["device_id"].values
    keys = [
        value
        for i in (0, batch.rows - 1)
        for value in (datetime_from_micros(int(times[i])), customer_id, int(devices[i]))
    ]
    probe = await conn.execute(PROBE_EXISTING, keys)
    seen = await probe.fetchone()
    return bool(seen and seen[0])


async def copy_chunks(
    conn: AsyncConnection[Any],
    customer_id: int,
    first: MeasurementColumns,
    more: int,
    next_chunk: Callable[[], Awaitable[bytes]],
) -> bool:
    """A batch that comes in chunks COPYed as they come, inside the transaction (a savepoint of
    its own): `first`'s tuples (laid out here), then the tuples of `more` chunks from
    `next_chunk` (laid out where they are decoded — in the pool, so the event loop and the pool's
    thread do not pass the GIL back and forth around every numpy call — and which starts
    decoding the chunk after before it returns, so PostgreSQL stores a chunk while the next is
    decoded; it raises `NotWhole` for a chunk the stream does not take). False, with nothing
    stored (the savepoint rolled back), when a chunk is not taken or a key exists already (a
    unique violation, or the probe of the first chunk's ends): the caller then stores the batch
    whole."""
    if await _probe(conn, customer_id, first):
        return False
    try:
        async with conn.transaction(), conn.cursor() as cur, cur.copy(COPY_MEASUREMENTS) as copy:
            await copy.write(copy_stream(first, customer_id, trailer=False))
            for _ in range(more):
                await copy.write(await next_chunk())
            await copy.write(COPY_TRAILER)
    except (NotWhole, psycopg.errors.UniqueViolation):
        return False
    return True
