"""A columnar batch from the customer database's records with the standard library only: the
gateway path (no numpy). `struct` parses the records, a sort puts them meter by meter in time,
`fleetcore.columnar_stdlib` encodes them — the same body, byte for byte, as `columns_numpy`.
"""

from __future__ import annotations

from functools import reduce
from operator import itemgetter, or_

from fleetcore import MEASUREMENT_VALUE_FIELDS, PushCursor
from fleetcore.columnar_layout import datetime_from_micros
from fleetcore.columnar_stdlib import PlainColumn, encode_plain_columns
from fleetcore.protocol import WireFormat

from pusher.source.reads import MeasurementBatch
from pusher.source.records import (
    HIGH_PG,
    LOW_PG,
    POSTGRES_EPOCH_US,
    RECORD,
    check_length,
    first_row_json,
)

__all__ = ["batch_from_records"]

_FIRST_VALUE = 5  # xid, device_id, time, received_at, mask, then the values


def _first_item(record: tuple[int | float, ...]) -> dict[str, int | float]:
    item: dict[str, int | float] = {
        "time": int(record[2]) + POSTGRES_EPOCH_US,
        "device_id": record[1],
        "received_at": int(record[3]) + POSTGRES_EPOCH_US,
    }
    mask = int(record[4])
    for bit, name in enumerate(MEASUREMENT_VALUE_FIELDS):
        if not mask >> bit & 1:
            item[name] = record[_FIRST_VALUE + bit]
    return item


def batch_from_records(data: bytes, count: int, after: PushCursor, limit: int) -> MeasurementBatch:
    """The batch in the stream: rows whose times the protocol can carry go in the body (meter
    by meter, in time: neighbouring values differ least), the others are only passed by the
    cursor (and quarantined then, like the JSON path's)."""
    check_length(data, count)
    if not count:
        return MeasurementBatch(after, after, b"", 0, limit, None, None, 0, WireFormat.COLUMNAR)
    records = list(RECORD.iter_unpack(data))
    last = records[-1]
    rows = [r for r in records if LOW_PG < r[2] < HIGH_PG and LOW_PG < r[3] < HIGH_PG]
    del records
    sent = len(rows)
    first = first_row_json(_first_item(rows[0])) if sent else None
    rows.sort(key=itemgetter(1, 2))
    fields = (
        list(zip(*rows, strict=True))
        if rows
        else [()] * (_FIRST_VALUE + len(MEASUREMENT_VALUE_FIELDS))
    )
    del rows
    received = list(map(POSTGRES_EPOCH_US.__add__, fields[3]))
    columns: dict[str, PlainColumn] = {
        "time": PlainColumn(list(map(POSTGRES_EPOCH_US.__add__, fields[2]))),
        "device_id": PlainColumn(fields[1]),
        "received_at": PlainColumn(received),
    }
    masks = fields[4]
    any_null = reduce(or_, masks, 0)
    for bit, name in enumerate(MEASUREMENT_VALUE_FIELDS):
        nulls = [bool(m >> bit & 1) for m in masks] if any_null >> bit & 1 else None
        columns[name] = PlainColumn(fields[_FIRST_VALUE + bit], nulls)
    body = encode_plain_columns(sent, columns)
    last_time = min(max(int(last[2]), LOW_PG), HIGH_PG) + POSTGRES_EPOCH_US
    end = PushCursor(int(last[0]), int(last[1]), datetime_from_micros(last_time))
    newest = datetime_from_micros(max(received)) if sent else None
    return MeasurementBatch(
        after, end, body, count, limit, newest, first, sent, WireFormat.COLUMNAR
    )
