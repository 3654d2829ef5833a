"""Reading a measurement batch as columns: PostgreSQL's binary values out of the customer
database, parsed and encoded in the pusher into the columnar encoding (docs/PROTOCOL.md).

The rows are the cursor's selection (`cursor.SELECTION`, the very text `reads.READ_MEASUREMENTS`
selects with: same order, same snapshot-xmin horizon, same limit), so the no-loss argument of
`fleetcore.cursor` holds unchanged. What differs is who does the work: PostgreSQL only joins
each row's values in their binary send format (`float8send` …: 8 big-endian bytes each, NULLs
as 0 with a bitmask saying which were NULL, so every record has the same size) into one bytea
for the batch, fetched in one round trip; the pusher parses and encodes the columns. (A binary COPY would stream the same, but psycopg hands COPY data over one row at a
time: ~1 µs of Python per row.) Building JSON in PostgreSQL (`row_to_json`, `string_agg`)
was the largest cost of a catch-up (~40 ms of the customer database's CPU per 5,000 rows).

Two implementations of that parse-and-encode live side by side and give the same body, byte for
byte: `columns_stdlib` (the standard library only, the gateway path: no numpy in the package) and
`columns_numpy` (where numpy is installed: about a tenth of the CPU per row, ~30 MiB more memory).
`PUSHER_COLUMNAR_ENCODER` picks one (`columnar_encoder`); "auto" takes numpy when it is there.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import psycopg
from fleetcore import MEASUREMENT_VALUE_FIELDS, PushCursor
from psycopg.rows import tuple_row

from pusher.errors import ConfigError
from pusher.settings import COLUMNAR_ENCODERS, numpy_installed
from pusher.source.cursor import SELECTION, order_by, selection_params
from pusher.source.reads import MeasurementBatch
from pusher.source.records import Records

__all__ = [
    "CHUNK_ROWS",
    "COLUMNAR_ENCODERS",
    "READ_MEASUREMENT_COLUMNS",
    "RECORD_SQL",
    "BatchBuilder",
    "columnar_encoder",
    "read_measurement_columns",
    "read_record_chunks",
    "read_records",
]

BatchBuilder = Callable[[Records, int, PushCursor, int], MeasurementBatch]
"""(records, their count, the cursor they follow, the limit asked) -> the batch; records given
as a list of chunks are taken out of it as they are parsed."""

_NULL_MASK = " | ".join(
    f"((m.{name} IS NULL)::int4 << {bit})" for bit, name in enumerate(MEASUREMENT_VALUE_FIELDS)
)
_VALUES = ", ".join(f"coalesce(m.{name}, 0)" for name in MEASUREMENT_VALUE_FIELDS)

RECORD_SQL = " || ".join(
    [
        "xid8send(m.push_xid)",
        "int8send(m.device_id)",
        "timestamptz_send(m.time)",
        "timestamptz_send(m.received_at)",
        f"int4send({_NULL_MASK})",
        *(f"float8send(coalesce(m.{name}, 0))" for name in MEASUREMENT_VALUE_FIELDS),
    ]
)

CHUNK_ROWS = 500
"""Records per result row: a batch comes in chunks of ~110 KiB rather than one bytea of the
whole batch (5,000 rows: 1.1 MiB), so neither libpq's input buffer (it grows to the largest
message received and keeps that size for the connection's life) nor its result holds a batch."""

READ_MEASUREMENT_COLUMNS = f"""
SELECT count(*), string_agg(b.record, ''::bytea ORDER BY b.k1, b.k2, b.k3)
FROM (SELECT m.push_xid AS k1, m.device_id AS k2, m.time AS k3, {RECORD_SQL} AS record,
             (row_number() OVER (ORDER BY {order_by("m")}) - 1) / {CHUNK_ROWS} AS chunk
{SELECTION}) AS b
GROUP BY b.chunk
ORDER BY b.chunk
"""
"""SQL: the batch's records in chunks of up to `CHUNK_ROWS`, in cursor order (no row at all
when the batch is empty); each row is (records in the chunk, their bytes)."""


def columnar_encoder(choice: str = "auto") -> BatchBuilder:
    """The records-to-body implementation for PUSHER_COLUMNAR_ENCODER: "stdlib", "numpy"
    (ConfigError where numpy is not installed), or "auto" (numpy where installed). Only the
    chosen one is imported: a pusher without numpy never loads it."""
    if choice not in COLUMNAR_ENCODERS:
        raise ConfigError(f"PUSHER_COLUMNAR_ENCODER must be one of {', '.join(COLUMNAR_ENCODERS)}")
    has_numpy = numpy_installed()
    if choice == "numpy" and not has_numpy:
        raise ConfigError("PUSHER_COLUMNAR_ENCODER=numpy but numpy is not installed")
    if choice == "numpy" or (choice == "auto" and has_numpy):
        from pusher.source.columns_numpy import batch_from_records as with_numpy

        return with_numpy
    from pusher.source.columns_stdlib import batch_from_records as with_stdlib

    return with_stdlib


async def read_record_chunks(
    conn: psycopg.AsyncConnection[Any], after: PushCursor, limit: int
) -> tuple[list[bytes], int]:
    """The records of the next batch after `after` (at most `limit`), in the chunks they come in
    (libpq's single-row mode), and their count."""
    chunks: list[bytes] = []
    count = 0
    async with conn.cursor(row_factory=tuple_row, binary=True) as cur:
        async for n, chunk in cur.stream(READ_MEASUREMENT_COLUMNS, selection_params(after, limit)):
            chunks.append(chunk)
            count += int(n)
            del chunk
    return chunks, count


async def read_records(
    conn: psycopg.AsyncConnection[Any], after: PushCursor, limit: int
) -> tuple[bytearray, int]:
    """`read_record_chunks` in one buffer."""
    chunks, count = await read_record_chunks(conn, after, limit)
    return bytearray(b"".join(chunks)), count


async def read_measurement_columns(
    conn: psycopg.AsyncConnection[Any],
    after: PushCursor,
    limit: int,
    build: BatchBuilder | None = None,
) -> MeasurementBatch:
    """The next batch after `after`, its body in the columnar encoding (not yet compressed),
    made by `build` (`columnar_encoder("auto")` when not given) in a worker thread, off the
    event loop (numpy releases the GIL for most of it; the standard library's share of it is
    taken in turns with the loop)."""
    chunks, count = await read_record_chunks(conn, after, limit)
    return await asyncio.to_thread(build or columnar_encoder(), chunks, count, after, limit)
