"""Reading a measurement batch as columns: PostgreSQL's binary values out of the customer
database, numpy in the pusher, the columnar encoding (docs/PROTOCOL.md) as the body.

The rows are the cursor query's (`CURSOR_SELECTION`, the very text `reads.READ_MEASUREMENTS`
selects with: same order, same snapshot-xmin horizon, same limit), so the no-loss argument of
`fleetcore.cursor` holds unchanged. What differs is who does the work: PostgreSQL only joins
each row's values in their binary send format (`float8send` …: 8 big-endian bytes each, NULLs
as 0 with a bitmask saying which were NULL, so every record has the same size) into one bytea
for the batch, fetched in one round trip and parsed as one numpy array; the pusher encodes the
columns. (A binary COPY would stream the same, but psycopg hands COPY data over one row at a
time: ~1 µs of Python per row.) Building JSON in PostgreSQL (`row_to_json`, `string_agg`)
was the largest cost of a catch-up (~40 ms of the customer database's CPU per 5,000 rows).
"""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
import numpy as np
import psycopg
from fleetcore import (
    COLUMNAR_MEDIA_TYPE,
    MEASUREMENT_VALUE_FIELDS,
    Column,
    MeasurementColumns,
    PushCursor,
    encode_columns,
)
from fleetcore.columnar import datetime_from_micros, micros_from_datetime
from psycopg.rows import tuple_row

from pusher.errors import SourceError
from pusher.source.carriable import CURSOR_KEY, HIGH, LOW
from pusher.source.reads import MeasurementBatch

__all__ = ["CURSOR_SELECTION", "READ_MEASUREMENT_COLUMNS", "read_measurement_columns"]

CURSOR_SELECTION = f"""
          FROM monitoring.power_measurements AS m
          WHERE (m.push_xid, m.device_id, m.time) > {CURSOR_KEY}
            AND m.push_xid < (SELECT pg_snapshot_xmin(pg_current_snapshot()))
          ORDER BY m.push_xid, m.device_id, m.time
          LIMIT %(limit)s"""

_NULL_MASK = " | ".join(
    f"((m.{name} IS NULL)::int4 << {bit})" for bit, name in enumerate(MEASUREMENT_VALUE_FIELDS)
)
_VALUES = ", ".join(f"coalesce(m.{name}, 0)" for name in MEASUREMENT_VALUE_FIELDS)

_RECORD_SQL = " || ".join(
    [
        "xid8send(m.push_xid)",
        "int8send(m.device_id)",
        "timestamptz_send(m.time)",
        "timestamptz_send(m.received_at)",
        f"int4send({_NULL_MASK})",
        *(f"float8send(coalesce(m.{name}, 0))" for name in MEASUREMENT_VALUE_FIELDS),
    ]
)

READ_MEASUREMENT_COLUMNS = f"""
SELECT count(*), coalesce(string_agg(b.record, ''::bytea ORDER BY b.k1, b.k2, b.k3), ''::bytea)
FROM (SELECT m.push_xid AS k1, m.device_id AS k2, m.time AS k3, {_RECORD_SQL} AS record
{CURSOR_SELECTION}) AS b
"""

_RECORD = np.dtype(
    [
        ("xid", ">u8"),
        ("device_id", ">i8"),
        ("time", ">i8"),
        ("received_at", ">i8"),
        ("mask", ">i4"),
    ]
    + [(name, ">f8") for name in MEASUREMENT_VALUE_FIELDS]
)
_POSTGRES_EPOCH_US = 946_684_800_000_000
# The carriable range (`carriable.py`) in PostgreSQL's own µs since 2000 (±infinity are the
# int64 extremes there, BC dates large negatives: all outside).
_LOW = micros_from_datetime(LOW) - _POSTGRES_EPOCH_US
_HIGH = micros_from_datetime(HIGH) - _POSTGRES_EPOCH_US


def _records(data: bytes, count: int) -> np.ndarray[Any, np.dtype[np.void]]:
    """The batch's bytes as fixed-size records, checked: data of another size is refused."""
    if len(data) != count * _RECORD.itemsize:
        raise SourceError(f"{len(data)} bytes of records for {count} rows")
    return np.frombuffer(data, _RECORD, count=count)


def _first_row_json(columns: MeasurementColumns, index: int) -> str:
    item: dict[str, Any] = {}
    for name, column in columns.columns.items():
        if column.nulls is not None and column.nulls[index]:
            continue
        value = column.values[index].item()
        item[name] = datetime_from_micros(value) if name in ("time", "received_at") else value
    return msgspec.json.encode(item).decode()


def _batch(data: bytes, count: int, after: PushCursor, limit: int) -> MeasurementBatch:
    """The batch in the stream: rows whose times the protocol can carry go in the body (meter
    by meter, in time: neighbouring values differ least), the others are only passed by the
    cursor (and quarantined then, like the JSON path's)."""
    records = _records(data, count)
    if not count:
        return MeasurementBatch(after, after, b"", 0, limit, None, None, 0, COLUMNAR_MEDIA_TYPE)
    pg_time = records["time"].astype(np.int64)
    pg_received = records["received_at"].astype(np.int64)
    carriable = (pg_time > _LOW) & (pg_time < _HIGH) & (pg_received > _LOW) & (pg_received < _HIGH)
    rows = records[carriable]
    sent = len(rows)
    columns: dict[str, Column] = {
        "time": Column(rows["time"].astype(np.int64) + _POSTGRES_EPOCH_US),
        "device_id": Column(rows["device_id"].astype(np.int64)),
        "received_at": Column(rows["received_at"].astype(np.int64) + _POSTGRES_EPOCH_US),
    }
    mask = rows["mask"].astype(np.int64)
    for bit, name in enumerate(MEASUREMENT_VALUE_FIELDS):
        nulls = (mask >> bit & 1).astype(np.bool_)
        columns[name] = Column(rows[name].astype(np.float64), nulls if nulls.any() else None)
    in_cursor_order = MeasurementColumns(sent, columns)
    order = np.lexsort((columns["time"].values, columns["device_id"].values))
    body = encode_columns(in_cursor_order.take(order))
    last_time = min(max(int(pg_time[-1]), _LOW), _HIGH) + _POSTGRES_EPOCH_US
    end = PushCursor(
        int(records["xid"][-1]), int(records["device_id"][-1]), datetime_from_micros(last_time)
    )
    newest = first = None
    if sent:
        newest = datetime_from_micros(int(columns["received_at"].values.max()))
        first = _first_row_json(in_cursor_order, 0)
    return MeasurementBatch(
        after, end, body, count, limit, newest, first, sent, COLUMNAR_MEDIA_TYPE
    )


async def read_measurement_columns(
    conn: psycopg.AsyncConnection[Any], after: PushCursor, limit: int
) -> MeasurementBatch:
    """The next batch after `after`, its body in the columnar encoding (not yet compressed);
    parsing and encoding run in a worker thread (numpy releases the GIL for most of it)."""
    params = {
        "xid": str(after.xid),
        "device_id": after.device_id,
        "time": after.time,
        "limit": limit,
    }  # the cursor key's parameters, as `reads.read_measurements` passes them
    async with conn.cursor(row_factory=tuple_row, binary=True) as cur:
        await cur.execute(READ_MEASUREMENT_COLUMNS, params)
        row = await cur.fetchone()
    assert row is not None
    count, data = int(row[0]), bytes(row[1])
    return await asyncio.to_thread(_batch, data, count, after, limit)
