"""The bodies a simulated gateway sends (`simulator.py`): its sites and devices full sets and
its measurement batches, with the content headers each goes with.

They are what the pusher sends: JSON `{"items": [...]}` with the keys of the pusher's push
item, compressed by `pusher.delivery.gzip_body` at the pusher's default level, from one of two
sources built before the clock starts: `ValuePool` splices each tick's time and device ids into
realistic value parts (every body its own), `PreEncoded` hands out the same pre-compressed
batches to every gateway (the generator then costs nothing per request). `ValuePool` with
`columnar = True` sends the same samples in the pusher's columnar encoding (zstd'd when that
makes it smaller, `columnar_wire`) instead — it can be switched while the fleet runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Protocol

import msgspec
from fleetcore import MEASUREMENT_VALUE_FIELDS, columns_from_rows, encode_columns, zstd_compress
from fleetcore.columnar_layout import micros_from_datetime, varint
from fleetcore.columnar_read import Reader, read_header
from fleetcore.protocol import COLUMNAR_MEDIA_TYPE
from pusher.delivery import gzip_body
from rows import generate_measurements, measurement_items

if TYPE_CHECKING:
    from simulator import Gateway

__all__ = [
    "COLUMNAR_HEADERS",
    "GZIP_LEVEL",
    "JSON_HEADERS",
    "RAW_COLUMNAR_HEADERS",
    "Bodies",
    "PreEncoded",
    "Tick",
    "ValuePool",
    "body_headers",
    "columnar_wire",
    "full_set_bodies",
]

GZIP_LEVEL = 1  # the pusher's PUSHER_GZIP_LEVEL default
Tick = tuple[int, datetime]  # (the gateway's tick number, when its samples were taken)

COLUMNAR_VARIANTS = 16  # value sets per meter count of the columnar one-tick templates
_TEMPLATE_TIME = datetime(2026, 1, 1, tzinfo=UTC)


def _zigzag(value: int) -> int:
    return value * 2 if value >= 0 else -value * 2 - 1


JSON_HEADERS = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
COLUMNAR_HEADERS = {"Content-Type": COLUMNAR_MEDIA_TYPE, "Content-Encoding": "zstd"}
RAW_COLUMNAR_HEADERS = {"Content-Type": COLUMNAR_MEDIA_TYPE}
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"  # a zstd frame's first bytes (a columnar body's are its version)


def columnar_wire(raw: bytes) -> bytes:
    """A columnar body as the pusher sends it (`pusher.delivery.wire.encode`): zstd'd, or as it
    is when zstd would not make it smaller — a gateway's one-minute batch of a few dozen rows
    goes uncompressed (1,106 bytes raw, 1,120 zstd'd), and ingestd then skips the decompressor
    (~20 µs warm, 35-50 µs with its caches cold)."""
    packed = zstd_compress(raw)
    return packed if len(packed) < len(raw) else raw


def body_headers(encoding: str, body: bytes) -> dict[str, str]:
    """The content headers a measurements body goes with: gzip JSON, or columnar zstd'd or raw
    (`columnar_wire` decides per body)."""
    if encoding != "columnar":
        return JSON_HEADERS
    return COLUMNAR_HEADERS if body[:4] == _ZSTD_MAGIC else RAW_COLUMNAR_HEADERS


class Bodies(Protocol):
    @property
    def encoding(self) -> str:
        """ "json" or "columnar": which headers a measurements body goes with."""
        ...

    def measurements(self, gateway: Gateway, ticks: Sequence[Tick]) -> bytes: ...


class ValuePool:
    """Encoded value parts (`"v1":230.4,…,"thd_i":3.1}`) of realistic samples, shared by all;
    one row in `reject_every` is dated 2 days ahead (refused by ingestd, dead-lettered).
    `columnar`: the same samples in the columnar encoding."""

    def __init__(
        self, size: int = 4096, seed: int = 3, reject_every: int = 0, columnar: bool = False
    ) -> None:
        rows = generate_measurements(size, devices=64, seed=seed)
        self.values = [dict(zip(MEASUREMENT_VALUE_FIELDS, row[3:], strict=True)) for row in rows]
        self.fragments = [msgspec.json.encode(v)[1:] for v in self.values]
        self.reject_every = reject_every
        self.columnar = columnar
        self._templates: dict[tuple[int, int], tuple[bytes, list[tuple[int, int]]]] = {}

    @property
    def encoding(self) -> str:
        return "columnar" if self.columnar else "json"

    def _index(self, gateway: int, meter: int, tick: int) -> int:
        return (gateway * 7919 + meter * 131 + tick) % len(self.fragments)

    def pick(self, gateway: int, meter: int, tick: int) -> bytes:
        return self.fragments[self._index(gateway, meter, tick)]

    def measurements(self, gateway: Gateway, ticks: Sequence[Tick]) -> bytes:
        if self.columnar:
            return self._columnar(gateway, ticks)
        parts: list[bytes] = []
        ahead = timedelta(days=2)
        for tick, when in ticks:
            for meter in range(1, gateway.meters + 1):
                sample_no = gateway.index * 31 + tick * gateway.meters + meter
                refused = self.reject_every and sample_no % self.reject_every == 0
                stamp = (when + ahead if refused else when).isoformat().encode()
                parts.append(
                    b'{"time":"%s","device_id":%d,"received_at":"%s",%s'
                    % (stamp, meter, stamp, self.pick(gateway.index, meter, tick))
                )
        return gzip_body(b'{"items":[' + b",".join(parts) + b"]}", GZIP_LEVEL)

    def _columnar(self, gateway: Gateway, ticks: Sequence[Tick]) -> bytes:
        """Meter by meter, in time, as the pusher's columnar reader orders them."""
        if len(ticks) == 1:
            body = self._columnar_tick(gateway, *ticks[0])
            if body is not None:
                return body
        ahead = timedelta(days=2)
        rows = []
        for meter in range(1, gateway.meters + 1):
            for tick, when in ticks:
                sample_no = gateway.index * 31 + tick * gateway.meters + meter
                refused = self.reject_every and sample_no % self.reject_every == 0
                stamp = when + ahead if refused else when
                values = self.values[self._index(gateway.index, meter, tick)]
                rows.append({"time": stamp, "device_id": meter, "received_at": stamp, **values})
        return columnar_wire(encode_columns(columns_from_rows(rows)))

    def prepare_columnar(self, meters: range) -> None:
        """Every one-tick template of these meter counts, encoded now (before a clock starts:
        ~4 ms each, 16 per meter count)."""
        for count in meters:
            for variant in range(COLUMNAR_VARIANTS):
                if (count, variant) not in self._templates:
                    self._templates[count, variant] = self._template(count, variant)

    def _columnar_tick(self, gateway: Gateway, tick: int, when: datetime) -> bytes | None:
        """One tick's body from a template of its meters' values (one of `COLUMNAR_VARIANTS`
        per meter count), its times patched in: encoding a body per request cost the generator
        ~7 ms of CPU (more than ingestd's decoding), so a 10,000-gateway columnar window was the
        generator's. None when a row of the tick is to be refused (the full encoder then)."""
        if self.reject_every and any(
            (gateway.index * 31 + tick * gateway.meters + meter) % self.reject_every == 0
            for meter in range(1, gateway.meters + 1)
        ):
            return None
        variant = (gateway.index * 7919 + tick) % COLUMNAR_VARIANTS
        key = (gateway.meters, variant)
        template = self._templates.get(key)
        if template is None:
            template = self._templates[key] = self._template(gateway.meters, variant)
        body, spans = template
        stamp = varint(_zigzag(micros_from_datetime(when)))
        if any(end - start != len(stamp) for start, end in spans):
            return None
        out = bytearray(body)
        for start, end in spans:
            out[start:end] = stamp
        return columnar_wire(bytes(out))

    def _template(self, meters: int, variant: int) -> tuple[bytes, list[tuple[int, int]]]:
        """A body of `meters` rows at `_TEMPLATE_TIME` and where its key columns' bases (that
        time) are."""
        rows = [
            {
                "time": _TEMPLATE_TIME,
                "device_id": meter,
                "received_at": _TEMPLATE_TIME,
                **self.values[(variant * 131 + meter * 7) % len(self.values)],
            }
            for meter in range(1, meters + 1)
        ]
        body = encode_columns(columns_from_rows(rows))
        reader = Reader(body)
        reader.byte()
        reader.varint()
        spans = []
        base = micros_from_datetime(_TEMPLATE_TIME)
        for _ in range(reader.byte()):
            start = reader.pos
            header = read_header(reader)
            if header.name in ("time", "received_at") and header.base == base:
                spans.append((start + 3 + (header.ref is not None), reader.pos))
        return body, spans


class PreEncoded:
    """`ticks` batches of `rows_per_tick` generated rows (distinct keys), encoded once; tick n
    of every gateway is batch n (each gateway is its own customer), a single tick's body is
    compressed once too."""

    def __init__(self, ticks: int, rows_per_tick: int) -> None:
        items = measurement_items(generate_measurements(ticks * rows_per_tick, devices=10))
        self.fragments = [
            msgspec.json.encode(items[i : i + rows_per_tick])[1:-1]
            for i in range(0, len(items), rows_per_tick)
        ]
        self.single = [self._body([f]) for f in self.fragments]

    @property
    def encoding(self) -> str:
        return "json"

    @staticmethod
    def _body(fragments: Sequence[bytes]) -> bytes:
        return gzip_body(b'{"items":[' + b",".join(fragments) + b"]}", GZIP_LEVEL)

    def measurements(self, gateway: Gateway, ticks: Sequence[Tick]) -> bytes:
        first = ticks[0][0] % len(self.fragments)
        if len(ticks) == 1:
            return self.single[first]
        return self._body(self.fragments[first : first + len(ticks)])


def full_set_bodies(index: int, meters: int, sites: int) -> tuple[bytes, bytes]:
    """The gateway's sites and devices bodies (gzip'd JSON), built once."""
    updated = "2026-01-05T10:00:00+00:00"
    site_items = [
        {
            "id": s,
            "name": f"Plant {index}.{s}",
            "timezone": "Europe/Amsterdam",
            "address": f"Industrieweg {s}, {1000 + index % 9000} AB",
            "updated_at": updated,
        }
        for s in range(1, sites + 1)
    ]
    device_items = [
        {
            "id": d,
            "site_id": 1 + (d - 1) % sites,
            "serial_number": f"AW21-{index:05d}-{d:03d}",
            "model": "Acuvim IIR",
            "name": f"Feeder {d}",
            "updated_at": updated,
        }
        for d in range(1, meters + 1)
    ]
    encode = msgspec.json.encode
    return (
        gzip_body(encode({"items": site_items}), GZIP_LEVEL),
        gzip_body(encode({"items": device_items}), GZIP_LEVEL),
    )
