"""The same rows as bodies alone (no HTTP), in the pusher's encodings and its peers': gzip-1
JSON (the pusher's JSON body), InfluxDB line protocol gzip-6, Prometheus remote-write 1.0
(protobuf `WriteRequest`, one series per meter and field, snappy block format via cramjam) and
the columnar encoding; `body_sizes` gives each one's bytes per row (`wire.py`)."""

from __future__ import annotations

import gzip
import struct
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import cramjam
import msgspec
from fleetcore import MEASUREMENT_VALUE_FIELDS, columns_from_rows, encode_columns, zstd_compress
from fleetcore.columnar_layout import varint  # unsigned LEB128: protobuf's varint too

__all__ = ["Row", "body_sizes", "columnar_body", "influx_body", "json_body", "remote_write_body"]

Row = dict[str, Any]


def json_body(rows: Sequence[Row], received: datetime) -> bytes:
    items = [{**r, "received_at": received} for r in rows]
    return gzip.compress(msgspec.json.encode({"items": items}), 1, mtime=0)


def influx_body(rows: Sequence[Row]) -> bytes:
    lines = (
        f"power_measurements,customer=BENCH,device_id={r['device_id']} "
        + ",".join(f"{n}={float(r[n])!r}" for n in MEASUREMENT_VALUE_FIELDS)
        + f" {int(r['time'].timestamp())}"
        for r in rows
    )
    return gzip.compress("\n".join(lines).encode(), 6, mtime=0)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field (wire type 2)."""
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def remote_write_body(rows: Sequence[Row]) -> bytes:
    """prometheus.WriteRequest{timeseries: [TimeSeries{labels, samples}]}, snappy block format:
    one series per (meter, field) with labels __name__, customer, device_id; samples in ms."""
    series: dict[tuple[str, int], list[tuple[float, int]]] = {}
    for r in rows:
        millis = int(r["time"].timestamp() * 1000)
        for name in MEASUREMENT_VALUE_FIELDS:
            series.setdefault((name, r["device_id"]), []).append((float(r[name]), millis))
    out = bytearray()
    for (name, device), samples in series.items():
        labels = [("__name__", f"fleet_{name}"), ("customer", "BENCH"), ("device_id", str(device))]
        ts = b"".join(_field(1, _field(1, k.encode()) + _field(2, v.encode())) for k, v in labels)
        for value, millis in samples:
            sample = b"\x09" + struct.pack("<d", value) + b"\x10" + varint(millis)
            ts += _field(2, sample)
        out += _field(1, ts)
    return bytes(cramjam.snappy.compress_raw(bytes(out)))


def columnar_body(rows: Sequence[Row], received: datetime) -> bytes:
    ordered = sorted(rows, key=lambda r: (r["device_id"], r["time"]))
    raw = encode_columns(columns_from_rows([{**r, "received_at": received} for r in ordered]))
    packed = zstd_compress(raw)
    return packed if len(packed) < len(raw) else raw


def body_sizes(batches: Sequence[Sequence[Row]], received: datetime) -> dict[str, float]:
    rows = sum(len(b) for b in batches)
    encoders = {
        "gzip1_json": lambda b: json_body(b, received),
        "influx_line_protocol_gzip6": influx_body,
        "prometheus_remote_write_snappy": remote_write_body,
        "columnar_zstd": lambda b: columnar_body(b, received),
    }
    return {
        name: round(sum(len(encode(b)) for b in batches) / rows, 1)
        for name, encode in encoders.items()
    }
