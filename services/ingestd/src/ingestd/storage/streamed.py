"""A large measurement batch stored as it is decoded: COPY chunk by chunk, so PostgreSQL stores
one chunk while ingestd decodes the next (`ingestd.ingest.ingest_chunked` drives it; issue 26's
large-batch ratio). Anything the chunks do not take whole leaves nothing stored and the batch to
the whole-batch path of `storage.writes`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import psycopg
from psycopg import AsyncConnection

from ingestd.storage.writes import COPY_MEASUREMENTS, PROBE_EXISTING

__all__ = ["Key", "NotWhole", "copy_chunks"]


class NotWhole(Exception):
    """A chunk of a streamed batch that the stream does not take (`copy_chunks`)."""


Key = tuple[datetime, int]
"""A sample's time and device id."""


async def copy_chunks(
    conn: AsyncConnection[Any],
    customer_id: int,
    ends: tuple[Key, Key],
    tuples: AsyncIterator[bytes],
) -> bool:
    """A batch that comes in chunks COPYed as they come, in the connection's transaction: each
    piece `tuples` yields (the first one starting with the stream's header, the last one ending
    in its trailer; laid out where they are decoded, in the pool, while PostgreSQL stores the
    pieces before; `tuples` raises `NotWhole` for a chunk the stream does not take). False,
    with nothing stored (the transaction rolled back), when a chunk is not taken or a key exists
    already: a unique violation, or one of the batch's `ends` found by a probe first (an obvious
    re-delivery, which then costs no decoding). The caller then stores the batch whole. No
    savepoint: the transaction holds nothing else yet, and every round trip before the first
    chunk leaves PostgreSQL idle."""
    probe = await conn.execute(
        PROBE_EXISTING, [v for moment, device in ends for v in (moment, customer_id, device)]
    )
    seen = await probe.fetchone()
    if seen and seen[0]:
        return False
    try:
        async with conn.cursor() as cur, cur.copy(COPY_MEASUREMENTS) as copy:
            async for piece in tuples:
                await copy.write(piece)
    except (NotWhole, psycopg.errors.UniqueViolation):
        await conn.rollback()
        return False
    return True
