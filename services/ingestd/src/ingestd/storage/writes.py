"""What a measurement batch writes, in the batch's own transaction: its rows and the hourly
buckets it dirties (the ingest use case, `ingestd.ingest`, calls these; a batch's audit row and
dead letters are `storage.audit`'s, a full set of sites or devices `storage.full_sets`').

Measurements take the fastest correct path, measured with `bench/insert_paths.py` (5,000-row
batches of 24 values, async psycopg, PostgreSQL 15 on the 2-core dev machine; see bench/README.md):

    binary COPY into the table                                   ~242k rows/s   1.00
    binary COPY into a temp table, then
      INSERT … SELECT … ON CONFLICT DO NOTHING                   ~160k rows/s   0.66
    INSERT … SELECT FROM unnest(27 binary arrays) ON CONFLICT    ~69k rows/s    0.29

(float8 values then; both encodings' batches now arrive as columns and share one COPY stream.)

So a batch is first COPYed straight into the stored table (`storage.layout`: each value as
integer steps or as the exact double) inside a savepoint: for new
samples (nearly every batch) that is exactly the speed of COPY. If any key already exists (a
re-delivery after a lost response, or a duplicate inside the batch), COPY fails with a unique
violation, the savepoint is rolled back and the batch goes through the staging table, whose
INSERT … ON CONFLICT DO NOTHING inserts exactly the new keys. A cheap probe of the batch's first
and last key sends an obvious re-delivery to the staging path without the failed COPY.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg
from fleetcore import (
    MEASUREMENT_VALUE_FIELDS,
    MeasurementColumns,
)
from fleetcore.columnar import datetime_from_micros
from fleetcore.resolution import RESOLUTIONS
from psycopg import AsyncConnection, sql
from psycopg.pq import TransactionStatus

from ingestd.pooled import PooledConnection
from ingestd.storage.audit import AuditRecord, audit_ctes, event_params
from ingestd.storage.binary_arrays import BinaryArray, bigint_array, bigint_arrays, binary_array
from ingestd.storage.copybuffer import COPY_COLUMNS, copy_stream
from ingestd.storage.layout import STORED_TABLE, field_bounds, scaled_column, split_matrix

__all__ = [
    "SMALL_BATCH_ROWS",
    "StoreResult",
    "copy_statement",
    "mark_dirty",
    "store_measurement_columns",
    "store_small_batch",
]

_COPY_COLUMNS = COPY_COLUMNS  # time, device_id, received_at, the values as stored, customer_id
_COLUMN_LIST = sql.SQL(", ").join(sql.Identifier(c) for c in _COPY_COLUMNS)
_STORED = sql.SQL(STORED_TABLE)

_STAGING = sql.Identifier("measurement_staging")


@functools.lru_cache(maxsize=128)
def copy_statement(columns: tuple[str, ...], *, staging: bool = False) -> sql.Composed:
    """`COPY … (columns) FROM STDIN (FORMAT BINARY)` into the stored table (or the staging
    table) for a stream of these columns (`CopyStream.columns`; the others take NULL)."""
    return sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
        _STAGING if staging else _STORED, sql.SQL(", ").join(sql.Identifier(c) for c in columns)
    )


CREATE_STAGING = sql.SQL(
    "CREATE TEMP TABLE IF NOT EXISTS measurement_staging "
    "(LIKE {} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
).format(_STORED)
MERGE_STAGING = sql.SQL(
    "INSERT INTO {stored} ({cols}) SELECT {cols} FROM measurement_staging "
    "ON CONFLICT (customer_id, device_id, time) DO NOTHING"
).format(stored=_STORED, cols=_COLUMN_LIST)
PROBE_EXISTING = sql.SQL(
    f"SELECT EXISTS (SELECT 1 FROM {STORED_TABLE} "
    "WHERE (time, customer_id, device_id) IN ((%s, %s, %s), (%s, %s, %s)))"
)

# The hourly buckets a measurement batch touched, for the rollup to recompute (see
# ingestd.storage.rollup, "Marks"): a mark not yet picked by the refresher is left as it is (only
# locked until the batch commits), a picked one gets a new version. Sorted, so concurrent batches
# lock the marks in one order.
_MARK_DIRTY = """INSERT INTO fleet.hourly_dirty AS d (customer_id, device_id, bucket)
SELECT {customer}, u.device_id, to_timestamp(u.hour * 3600)
FROM unnest({devices}::bigint[], {hours}::bigint[]) AS u(device_id, hour)
ORDER BY 2, 3
ON CONFLICT (customer_id, device_id, bucket)
DO UPDATE SET version = d.version + 1, picked = false WHERE d.picked"""
MARK_DIRTY = _MARK_DIRTY.format(customer="%s", devices="%s", hours="%s")

# A small measurement batch in one statement: the rows (new keys only: ON CONFLICT DO NOTHING),
# the hourly buckets they touch marked dirty, then the audit row, last-seen and counters from the
# count actually inserted. One statement is one transaction in autocommit: one round trip, without
# BEGIN, COMMIT and psycopg's pipeline machinery (~1 ms of ingestd CPU per batch). Below
# SMALL_BATCH_ROWS the round trips of COPY (probe, savepoint, copy, release) cost more than
# unnest's per-value work. The values travel as three 2-D arrays (integer steps, bigint steps,
# exact doubles: one row per field), so the statement has few parameters and is short enough
# for psycopg to cache its parsing (at most 50 parameters and 4,096 characters).
_INT4 = tuple(f for f in MEASUREMENT_VALUE_FIELDS if RESOLUTIONS[f].storage_type == "integer")
_INT8 = tuple(f for f in MEASUREMENT_VALUE_FIELDS if RESOLUTIONS[f].storage_type == "bigint")
_FIELDS = _INT4 + _INT8  # the matrices' rows: integer steps first, so each kind is a slice
assert sorted(_FIELDS) == sorted(MEASUREMENT_VALUE_FIELDS)
_CELLS = {
    **{scaled_column(f): f"s4[{k}][u.i]" for k, f in enumerate(_INT4, 1)},
    **{scaled_column(f): f"s8[{k}][u.i]" for k, f in enumerate(_INT8, 1)},
    **{f: f"x[{k}][u.i]" for k, f in enumerate(_FIELDS, 1)},
}
_MICROS = "TIMESTAMPTZ '1970-01-01 00:00:00+00' + {} * INTERVAL '1 microsecond'"
_FROM_ARRAYS = ", ".join(
    [_MICROS.format("u.time"), "u.device_id", _MICROS.format("u.received_at")]
    + [_CELLS[c] for c in _COPY_COLUMNS[3:-1]]
)
_ARRAYS = """unnest(%(time)b::bigint[], %(device_id)b::bigint[], %(received_at)b::bigint[])
        WITH ORDINALITY AS r(time, device_id, received_at, i),
    LATERAL (SELECT r.time, r.device_id, r.received_at, r.i::integer AS i) AS u,
    (SELECT %(scaled4)b::integer[] AS s4, %(scaled8)b::bigint[] AS s8,
            %(exact)b::float8[] AS x) AS a"""
INSERT_SMALL_BATCH = f"""
WITH inserted AS (
    INSERT INTO {STORED_TABLE} ({", ".join(_COPY_COLUMNS)})
    SELECT {_FROM_ARRAYS}, %(customer_id)s
    FROM {_ARRAYS}
    ON CONFLICT (customer_id, device_id, time) DO NOTHING
    RETURNING 1
), marked AS (
    {_MARK_DIRTY.format(customer="%(customer_id)s", devices="%(dirty_devices)b", hours="%(dirty_hours)b")}
), stored AS (SELECT count(*)::integer AS n FROM inserted),
{audit_ctes("(SELECT n FROM stored)", "%(rows)s - (SELECT n FROM stored)")}
SELECT n FROM stored
"""
SMALL_BATCH_ROWS = 200


@dataclass(frozen=True, slots=True)
class StoreResult:
    accepted: int
    duplicates: int


async def _copy_stream(conn: AsyncConnection[Any], statement: sql.Composed, stream: bytes) -> None:
    async with conn.cursor() as cur, cur.copy(statement) as copy:
        await copy.write(stream)


async def store_measurement_columns(
    conn: AsyncConnection[Any], customer_id: int, batch: MeasurementColumns
) -> StoreResult:
    """Insert new samples, skip those already stored; must run inside a transaction. Either
    encoding's batch as columns (a JSON body's rows become columns as it is decoded), fed to
    COPY as one binary stream built column-wise (`copybuffer`)."""
    if not batch.rows:
        return StoreResult(0, 0)
    times = batch.columns["time"].values
    devices = batch.columns["device_id"].values
    ends = (0, batch.rows - 1)
    keys = [
        value
        for i in ends
        for value in (datetime_from_micros(int(times[i])), customer_id, int(devices[i]))
    ]
    probe = await conn.execute(PROBE_EXISTING, keys)
    seen = await probe.fetchone()
    stream = copy_stream(batch, customer_id)
    if not (seen and seen[0]):
        try:
            async with conn.transaction():
                await _copy_stream(conn, copy_statement(stream.columns), stream.data)
            return StoreResult(batch.rows, 0)
        except psycopg.errors.UniqueViolation:
            pass  # some keys exist already: the staging path inserts exactly the new ones
    await conn.execute(CREATE_STAGING)
    await _copy_stream(conn, copy_statement(stream.columns, staging=True), stream.data)
    merged = await conn.execute(MERGE_STAGING)
    inserted = max(merged.rowcount, 0)
    return StoreResult(inserted, batch.rows - inserted)


async def mark_dirty(
    conn: AsyncConnection[Any], customer_id: int, devices: list[int], hours: list[int]
) -> None:
    """Mark buckets for recomputation, inside the batch's transaction (sorted: no deadlocks)."""
    if devices:
        await conn.execute(MARK_DIRTY, (customer_id, devices, hours))


_BOUNDS = field_bounds([RESOLUTIONS[f] for f in _FIELDS])
_KEYS = ("time", "device_id", "received_at")


def _array_params(batch: MeasurementColumns) -> dict[str, Any]:
    """The stored row's columns as binary arrays for `unnest`, laid out by numpy
    (`binary_arrays`): the keys one-dimensional, the values as three matrices of one row per
    field (None: null in every cell), split into integer steps and exact doubles all at once —
    per-field numpy calls are most of a small batch's cost (`storage.copybuffer` does the same
    split per field for COPY)."""
    columns = batch.columns
    keys = bigint_arrays([columns[key].values for key in _KEYS])
    params: dict[str, Any] = dict(zip(_KEYS, keys, strict=True))
    present = [columns.get(name) for name in _FIELDS]
    nulls: npt.NDArray[np.bool_] | None = None
    if all(c is not None and c.nulls is None for c in present):  # the usual batch
        # one C call (np.stack is Python over every row: ~10 µs warm, ~50 in a running ingestd)
        values = np.array([c.values for c in present if c is not None], np.float64)
    else:
        values = np.zeros((len(_FIELDS), batch.rows), np.float64)
        nulls = np.ones(values.shape, np.bool_)
        for i, column in enumerate(present):
            if column is not None:
                values[i] = column.values
                nulls[i] = False if column.nulls is None else column.nulls
    ints, whole = split_matrix(values, nulls, *_BOUNDS)
    not_scaled = ~whole
    n4 = len(_INT4)
    params["scaled4"] = _nullable(ints[:n4], ">i4", not_scaled[:n4])
    params["scaled8"] = _nullable(ints[n4:], ">i8", not_scaled[n4:])
    params["exact"] = _nullable(values, ">f8", whole if nulls is None else whole | nulls)
    return params


def _nullable(
    values: npt.NDArray[np.generic], dtype: str, nulls: npt.NDArray[np.bool_]
) -> BinaryArray | None:
    """A matrix as a binary array, or None (a null array) when every cell is null (the nulls
    counted once: none, the usual integer steps, need no mask)."""
    count = int(np.count_nonzero(nulls))
    if count == nulls.size:
        return None
    return binary_array(values, dtype, nulls if count else None)


async def store_small_batch(
    conn: AsyncConnection[Any],
    columns: MeasurementColumns,
    event: AuditRecord,
    dirty: tuple[list[int], list[int]],
) -> StoreResult:
    """A measurement batch of at most SMALL_BATCH_ROWS rows, its dirty marks and its audit row in
    one statement: in autocommit when the connection is idle (one round trip; the pool's
    connections are in autocommit already, `ingestd.pooled`), else inside the transaction already
    open (after the batch's dead letters; the caller commits). The marks are
    sent whether or not a row was new: a bucket without new rows recomputes to what it was."""
    params = event_params(event, True)
    params.update(_array_params(columns))
    params["rows"] = columns.rows
    devices, hours = dirty
    params["dirty_devices"] = bigint_array(devices)
    params["dirty_hours"] = bigint_array(hours)
    switch = not conn.autocommit and conn.info.transaction_status is TransactionStatus.IDLE
    if switch:
        await conn.set_autocommit(True)
    cur = conn.kept_cursor() if isinstance(conn, PooledConnection) else conn.cursor()
    try:
        await cur.execute(INSERT_SMALL_BATCH, params)
    finally:
        if switch:
            await conn.set_autocommit(False)
    row = await cur.fetchone()
    accepted = int(row[0]) if row else 0
    return StoreResult(accepted, columns.rows - accepted)
