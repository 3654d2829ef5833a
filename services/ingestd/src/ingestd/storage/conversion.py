"""Converting rows stored before the scaled layout, online: chunk by chunk, partition by partition.

Migration 0008 changes no row: rows stored before it keep every value in its float8 column, and
the readers' view gives them back as they are. `convert_stored_rows` rewrites those values as
integer steps (`fleet.to_scaled`, the same test the ingest path makes: exact on the bits, so
nothing is rounded; a value that is not a whole number of steps stays as it is) while ingest goes
on. Each part (TimescaleDB chunk, or weekly partition) is converted in slices of `slice_blocks`
heap pages (a TID range scan: no index, no sort), each slice one short transaction of its own, so
no statement holds more than a slice's row locks and readers see every row, converted or not,
with the same value at every moment. A compressed chunk is decompressed first and compressed
again after; a chunk ending before the compression horizon is compressed either way.

Resumable: a finished part is recorded in `fleet.storage_conversion` (migration 0009) and
skipped by a later run; a run that stops half-way through a part (crash, Ctrl-C, `max_slices`)
leaves its slices converted and the next run redoes the part, skipping converted rows (the
slice's condition only matches rows whose every integer column is null). Only one run at a time:
a session advisory lock. Rollback: docs/STORAGE.md.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from fleetcore import MEASUREMENT_VALUE_FIELDS
from fleetcore.resolution import RESOLUTIONS
from psycopg import AsyncConnection, sql

from ingestd.storage.layout import STORED_TABLE, scaled_column
from ingestd.storage.locks import CONVERSION_LOCK, session_turn

__all__ = [
    "ConversionReport",
    "PartReport",
    "convert_stored_rows",
    "unconverted_rows",
]


def _to_scaled(field_name: str) -> str:
    r = RESOLUTIONS[field_name]
    return f"fleet.to_scaled({field_name}, {r.factor:g}, {r.max_steps})"


_FLOATS = ", ".join(MEASUREMENT_VALUE_FIELDS)
_SCALED = ", ".join(scaled_column(f) for f in MEASUREMENT_VALUE_FIELDS)
# A row stored before the scaled layout: no integer column set, some float8 column set.
_UNCONVERTED = f"num_nonnulls({_SCALED}) = 0 AND num_nonnulls({_FLOATS}) > 0"
_SET = ",\n    ".join(
    f"{scaled_column(f)} = {_to_scaled(f)}, {f} = CASE WHEN {_to_scaled(f)} IS NULL THEN {f} END"
    for f in MEASUREMENT_VALUE_FIELDS
)
CONVERT_SLICE = f"""
UPDATE {{part}} SET
    {_SET}
WHERE ctid >= %(lo)s::tid AND ctid < %(hi)s::tid AND {_UNCONVERTED}
"""

TIMESCALE_PARTS = """
SELECT format('%I.%I', c.chunk_schema, c.chunk_name), c.is_compressed, c.range_end,
       (SELECT format('%I.%I', z.schema_name, z.table_name)
        FROM _timescaledb_catalog.chunk k
        JOIN _timescaledb_catalog.chunk z ON z.id = k.compressed_chunk_id
        WHERE k.schema_name = c.chunk_schema AND k.table_name = c.chunk_name)
FROM timescaledb_information.chunks c
WHERE c.hypertable_schema = 'fleet' AND c.hypertable_name = 'power_measurements_scaled'
ORDER BY c.range_start
"""
PLAIN_PARTS = """
SELECT format('%I.%I', n.nspname, c.relname), false, NULL::timestamptz, NULL::text
FROM pg_inherits i
JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE i.inhparent = 'fleet.power_measurements_scaled'::regclass
ORDER BY c.relname
"""
# Compressed batches holding a float8 value (an all-null column of a batch is stored as NULL):
# only those chunks need decompressing.
COMPRESSED_HAS_FLOATS = f"SELECT EXISTS (SELECT 1 FROM {{part}} WHERE num_nonnulls({_FLOATS}) > 0)"
DONE_PARTS = "SELECT part FROM fleet.storage_conversion"
RECORD_PART = """
INSERT INTO fleet.storage_conversion (part, rows_converted, seconds) VALUES (%s, %s, %s)
ON CONFLICT (part) DO UPDATE SET rows_converted = EXCLUDED.rows_converted,
    seconds = EXCLUDED.seconds, finished_at = now()
"""
BLOCKS = "SELECT pg_relation_size(%s::regclass) / current_setting('block_size')::bigint"
HYPERTABLE = f"""
SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb')
   AND (SELECT relkind FROM pg_class WHERE oid = '{STORED_TABLE}'::regclass) = 'r'
"""
STILL_UNCONVERTED = f"SELECT count(*) FROM {STORED_TABLE} WHERE {_UNCONVERTED}"


@dataclass(frozen=True, slots=True)
class PartReport:
    part: str
    rows: int
    seconds: float
    recompressed: bool


@dataclass(slots=True)
class ConversionReport:
    parts: list[PartReport] = field(default_factory=list)
    skipped: int = 0  # parts finished by an earlier run, or with nothing to convert
    complete: bool = False  # False: stopped at max_slices; run again to go on

    @property
    def rows(self) -> int:
        return sum(p.rows for p in self.parts)


async def _scalar(conn: AsyncConnection[Any], query: Any, params: Any = None) -> Any:
    cur = await conn.execute(query, params)
    row = await cur.fetchone()
    return row[0] if row else None


async def convert_stored_rows(
    conn: AsyncConnection[Any],
    *,
    compress_after: timedelta,
    slice_blocks: int = 1000,
    max_slices: int | None = None,
    progress: Callable[[PartReport], None] | None = None,
) -> ConversionReport:
    """Convert every part not converted yet; `conn` must be in autocommit mode (each slice
    commits alone). Returns when done, or after `max_slices` slices (`complete` False)."""
    async with session_turn(conn, CONVERSION_LOCK) as ours:
        if not ours:
            raise RuntimeError("another convert-storage run holds the conversion lock")
        return await _convert(conn, compress_after, slice_blocks, max_slices, progress)


async def _convert(
    conn: AsyncConnection[Any],
    compress_after: timedelta,
    slice_blocks: int,
    max_slices: int | None,
    progress: Callable[[PartReport], None] | None,
) -> ConversionReport:
    timescale = bool(await _scalar(conn, HYPERTABLE))
    cur = await conn.execute(TIMESCALE_PARTS if timescale else PLAIN_PARTS)
    parts = await cur.fetchall()
    done = {row[0] for row in await (await conn.execute(DONE_PARTS)).fetchall()}
    report = ConversionReport()
    budget = [max_slices if max_slices is not None else -1]
    horizon = await _scalar(conn, "SELECT now() - %s::interval", (compress_after,))
    for part, compressed, range_end, compressed_part in parts:
        if part in done:
            report.skipped += 1
            continue
        if compressed and not await _scalar(
            conn, sql.SQL(COMPRESSED_HAS_FLOATS.format(part=compressed_part))
        ):
            await conn.execute(RECORD_PART, (part, 0, 0.0))
            report.skipped += 1
            continue
        started = time.monotonic()
        if compressed:
            await conn.execute("SELECT decompress_chunk(%s::regclass)", (part,))
        rows = await _convert_part(conn, part, slice_blocks, budget)
        if rows is None:
            return report  # out of slices: the part is redone by the next run
        recompress = timescale and (compressed or _ended_before(range_end, horizon))
        if recompress:
            await conn.execute(
                "SELECT compress_chunk(%s::regclass, if_not_compressed => true)", (part,)
            )
        elif not timescale:
            await conn.execute(sql.SQL("VACUUM {}").format(sql.SQL(part)))
        finished = PartReport(part, rows, time.monotonic() - started, recompress)
        await conn.execute(RECORD_PART, (part, rows, finished.seconds))
        report.parts.append(finished)
        if progress is not None:
            progress(finished)
    report.complete = True
    return report


def _ended_before(range_end: datetime | None, horizon: datetime | None) -> bool:
    return range_end is not None and horizon is not None and range_end <= horizon


async def _convert_part(
    conn: AsyncConnection[Any], part: str, slice_blocks: int, budget: list[int]
) -> int | None:
    """Convert `part` slice by slice; the rows converted, or None when the slices ran out."""
    blocks = int(await _scalar(conn, BLOCKS, (part,)) or 0)
    statement = sql.SQL(CONVERT_SLICE.format(part=part))
    rows = 0
    for lo in range(0, blocks, slice_blocks):
        if budget[0] == 0:
            return None
        budget[0] -= 1
        cur = await conn.execute(statement, {"lo": f"({lo},0)", "hi": f"({lo + slice_blocks},0)"})
        rows += max(cur.rowcount, 0)
    return rows


async def unconverted_rows(conn: AsyncConnection[Any]) -> int:
    """Rows still held only as float8 (a full scan: for tests and the end of a run)."""
    return int(await _scalar(conn, STILL_UNCONVERTED) or 0)
