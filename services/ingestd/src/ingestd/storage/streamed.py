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
from psycopg.copy import AsyncLibpqWriter

from ingestd.storage.copybuffer import COPY_HEADER, COPY_TRAILER, CopyStream
from ingestd.storage.writes import PROBE_EXISTING, copy_statement

__all__ = ["Key", "NotWhole", "copy_chunks"]


class NotWhole(Exception):
    """A chunk of a streamed batch that the stream does not take (`copy_chunks`)."""


Key = tuple[datetime, int]
"""A sample's time and device id."""


async def copy_chunks(
    conn: AsyncConnection[Any],
    customer_id: int,
    ends: tuple[Key, Key],
    pieces: AsyncIterator[CopyStream],
) -> bool:
    """A batch that comes in chunks COPYed as they come, in the connection's transaction: the
    tuples of each piece `pieces` yields (laid out where they are decoded, in the pool, while
    PostgreSQL stores the pieces before; `pieces` raises `NotWhole` for a chunk the stream does
    not take). Pieces of the same columns share one COPY; a piece of other columns (a value
    finer than its resolution in some chunk only makes its exact-double column appear there)
    ends it and starts another. False, with nothing stored (the transaction rolled back), when
    a chunk is not taken or a key exists already: a unique violation, or one of the batch's
    `ends` found by a probe first (an obvious re-delivery, which then costs no decoding). The
    caller then stores the batch whole. No savepoint: the transaction holds nothing else yet,
    and every round trip before the first chunk leaves PostgreSQL idle.

    Each piece is flushed to the socket as it is written (`flush_threshold=0`): psycopg's
    writer otherwise leaves up to 1 MiB in libpq's buffer, sent only with the next write, so
    PostgreSQL stored what the socket took of a chunk and then waited, idle, for the rest until
    the pool had decoded the next chunk (0.7-0.9 ms of a 5,000-row batch's ~26, bench/HISTORY.md,
    issue 26's tenth pass)."""
    probe = await conn.execute(
        PROBE_EXISTING, [v for moment, device in ends for v in (moment, customer_id, device)]
    )
    seen = await probe.fetchone()
    if seen and seen[0]:
        return False
    try:
        piece = await anext(pieces, None)
        while piece is not None:
            columns = piece.columns
            async with (
                conn.cursor() as cur,
                cur.copy(
                    copy_statement(columns), writer=AsyncLibpqWriter(cur, flush_threshold=0)
                ) as copy,
            ):
                await copy.write(COPY_HEADER)
                while piece is not None and piece.columns == columns:
                    await copy.write(piece.data)
                    piece = await anext(pieces, None)
                await copy.write(COPY_TRAILER)
    except (NotWhole, psycopg.errors.UniqueViolation):
        await conn.rollback()
        return False
    return True
