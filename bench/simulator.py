"""The one gateway simulator of the benches (gateways.py, fleet.py): what a gateway sends, when,
and how it retries.

A gateway is its own customer with its own token and `meters` meters. Every `interval_s` (from a
random phase) each meter takes one sample; the gateway then sends, in the pusher's order, its
sites and devices when it has them (full sets: every tick, or only the first tick once the
pusher skips unchanged sets) and its queued samples in measurement batches of up to
`batch_rows` rows, one request in flight. As in the pusher's tick (`pusher.daemon`), each of the
three resources has its own schedule: a failed request makes that resource wait, and only it,
as the pusher's own `RetryPolicy` says (Retry-After plus jitter for 429/503, full-jitter
exponential backoff otherwise) with its own count of failures in a row; the round goes on to
the next resource (a refused full set does not hold the measurements back, nor the other way).

Bodies are what the pusher sends: JSON `{"items": [...]}` with the keys of the pusher's push
item, compressed by `pusher.delivery.gzip_body` at the pusher's default level, from one of two
sources built before the clock starts: `ValuePool` splices each tick's time and device ids into
realistic value parts (every body its own), `PreEncoded` hands out the same pre-compressed
batches to every gateway (the generator then costs nothing per request). `ValuePool` with
`columnar = True` sends the same samples in the pusher's columnar encoding (zstd) instead — it
can be switched while the fleet runs.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import time
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, Protocol

import aiohttp
import msgspec
import psycopg
from common import generate_measurements, measurement_items
from fleetcore import (
    MEASUREMENT_VALUE_FIELDS,
    columns_from_rows,
    encode_columns,
    generate_token,
    hash_token,
    token_hint,
    zstd_compress,
)
from fleetcore.columnar_layout import micros_from_datetime, varint
from fleetcore.columnar_read import Reader, read_header
from fleetcore.protocol import BATCH_TYPE_HEADER, COLUMNAR_MEDIA_TYPE, TOKEN_HEADER
from pusher.delivery import gzip_body
from pusher.retry import RetryEvent, RetryPolicy, parse_retry_after

__all__ = [
    "TYPES",
    "BatchRecord",
    "Fleet",
    "Gateway",
    "PreEncoded",
    "ValuePool",
    "body_headers",
    "build_gateways",
    "columnar_wire",
    "full_set_bodies",
    "latency",
    "register_gateways",
    "session",
]

GZIP_LEVEL = 1  # the pusher's PUSHER_GZIP_LEVEL default
BATCH_ROWS = 5_000  # the pusher's PUSHER_BATCH_SIZE default
TYPES = ("sites", "devices", "measurements")
Tick = tuple[int, datetime]  # (the gateway's tick number, when its samples were taken)

CLIENT_TIMEOUT_S = 60.0


def session(connections: int) -> aiohttp.ClientSession:
    """The fleet's one HTTP client: `connections` connections shared by every gateway (a real
    fleet has one per gateway; the generator cannot hold 10,000 sockets cheaply), each request
    bounded by 60 s (a timeout is recorded as the client's, not ingestd's, answer)."""
    connector = aiohttp.TCPConnector(limit=connections, limit_per_host=connections)
    return aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=CLIENT_TIMEOUT_S)
    )


INSERT_CUSTOMERS = """
INSERT INTO fleet.customers (code, name)
SELECT 'GW' || lpad(g::text, 5, '0'), 'Gateway ' || g FROM generate_series(1, %s) AS g
RETURNING id
"""
INSERT_TOKEN = (
    "INSERT INTO fleet.customer_tokens (token_hash, customer_id, hint) VALUES (%s, %s, %s)"
)


def register_gateways(dsn: str, count: int) -> list[str]:
    """`count` customers with one token each, in two statements; returns the tokens."""
    with psycopg.connect(dsn) as conn:
        ids = [row[0] for row in conn.execute(INSERT_CUSTOMERS, (count,)).fetchall()]
        tokens = [generate_token() for _ in ids]
        with conn.cursor() as cur:
            cur.executemany(
                INSERT_TOKEN,
                [(hash_token(t), i, token_hint(t)) for t, i in zip(tokens, ids, strict=True)],
            )
    return tokens


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


def build_gateways(
    tokens: Sequence[str], interval_s: float, meters: tuple[int, int], rng: random.Random
) -> list[Gateway]:
    """A gateway per token, each with meters in the `meters` range (a site per 20) and a random
    phase within the interval; full sets included."""
    out = []
    for i, token in enumerate(tokens):
        count = rng.randint(*meters)
        sites_body, devices_body = full_set_bodies(i, count, 1 + count // 20)
        out.append(Gateway(i, token, count, rng.uniform(0, interval_s), sites_body, devices_body))
    return out


@dataclass(slots=True)
class BatchRecord:
    phase: str
    batch_type: str
    sent_at: float
    latency_s: float
    status: str  # HTTP status, or the exception's name
    rows: int
    wire_bytes: int
    encoding: str = "json"
    detail: str = ""  # a refusal's reason (the error body's detail)
    attempt: int = 0  # failures of this resource in a row before it (0: a first try)


@dataclass
class Fleet:
    """What all gateways share: the URL, the bodies, the pusher settings they follow (interval,
    full sets, batch size, backoff base and cap, Retry-After jitter), the phase clock and the
    records."""

    url: str
    bodies: Bodies
    interval_s: float
    full_sets: Literal["every-tick", "first-tick"] = "every-tick"
    batch_rows: int = BATCH_ROWS
    backoff_base_s: float = 60.0  # PUSHER_BACKOFF_BASE_S default
    backoff_cap_s: float = 1800.0  # PUSHER_BACKOFF_CAP_S default
    jitter_s: float = 2.0  # PUSHER_RETRY_AFTER_JITTER_S default
    phase: str = "warmup"
    producing: bool = True
    restarted_at: float | None = None
    records: list[BatchRecord] = field(default_factory=list)
    caught_up_at: dict[int, float] = field(default_factory=dict)
    all_caught_up: asyncio.Event = field(default_factory=asyncio.Event)
    gateways: int = 0
    rows_sampled: int = 0

    def expect_caught_up(self, gateways: int) -> None:
        self.gateways = gateways
        self.caught_up(None)

    def caught_up(self, index: int | None) -> None:
        if index is not None and index not in self.caught_up_at:
            self.caught_up_at[index] = time.monotonic()
        if self.gateways and len(self.caught_up_at) >= self.gateways:
            self.all_caught_up.set()

    def backlog_rows(self, gateways: Sequence[Gateway]) -> int:
        return sum(len(g.ticks) * g.meters for g in gateways)


@dataclass
class Gateway:
    """One gateway; without full-set bodies it sends measurements only."""

    index: int
    token: str
    meters: int
    phase_s: float
    sites_body: bytes | None = None
    devices_body: bytes | None = None
    ticks: deque[Tick] = field(default_factory=deque)
    pending: set[str] = field(default_factory=set)
    failures: dict[str, int] = field(default_factory=lambda: dict.fromkeys(TYPES, 0))
    retry_at: dict[str, float] = field(default_factory=lambda: dict.fromkeys(TYPES, 0.0))
    tick_count: int = 0
    _cached: tuple[tuple[int, int, str], bytes] | None = None

    def __post_init__(self) -> None:
        if self.sites_body is not None and self.devices_body is not None:
            self.pending = {"sites", "devices"}

    def _waiting(self) -> list[str]:
        """The resources with something to send (due now or later)."""
        return [*sorted(self.pending), *(["measurements"] if self.ticks else [])]

    def _headers(self, batch_type: str, encoding: str, body: bytes) -> dict[str, str]:
        content = body_headers(encoding, body)
        return {TOKEN_HEADER: self.token, BATCH_TYPE_HEADER: batch_type, **content}

    def _tick(self, fleet: Fleet) -> None:
        self.ticks.append((self.tick_count, datetime.now(UTC).replace(microsecond=0)))
        self.tick_count += 1
        fleet.rows_sampled += self.meters
        if fleet.full_sets == "every-tick" and self.sites_body is not None:
            self.pending.update(("sites", "devices"))

    def _measurement_body(self, fleet: Fleet, count: int) -> bytes:
        """The body of the first `count` queued ticks (kept while a retry re-sends the same)."""
        key = (self.ticks[0][0], count, fleet.bodies.encoding)
        if self._cached is None or self._cached[0] != key:
            ticks = [self.ticks[i] for i in range(count)]
            self._cached = (key, fleet.bodies.measurements(self, ticks))
        return self._cached[1]

    async def run(
        self, session: aiohttp.ClientSession, fleet: Fleet, start: float, end: float
    ) -> None:
        policy = RetryPolicy(
            fleet.backoff_base_s, fleet.backoff_cap_s, fleet.jitter_s, random.Random(self.index)
        )
        next_tick = start + self.phase_s
        while (now := time.monotonic()) < end:
            while next_tick <= now:
                if fleet.producing:
                    self._tick(fleet)
                next_tick += fleet.interval_s
            waiting = self._waiting()
            if any(now >= self.retry_at[kind] for kind in waiting):
                await self._round(session, fleet, policy)
                continue
            wake = min([next_tick, end, *(self.retry_at[kind] for kind in waiting)])
            await asyncio.sleep(max(0.001, wake - time.monotonic()))

    async def _round(
        self, session: aiohttp.ClientSession, fleet: Fleet, policy: RetryPolicy
    ) -> None:
        """Sites, devices, then the queued samples, each resource that is due (the pusher's
        tick); a failure makes that resource wait and the round goes on to the next."""
        for batch_type, body in (("sites", self.sites_body), ("devices", self.devices_body)):
            if (
                batch_type in self.pending
                and body is not None
                and time.monotonic() >= self.retry_at[batch_type]
                and await self._send(session, fleet, policy, batch_type, body, 0, "json")
            ):
                self.pending.discard(batch_type)
        while self.ticks and time.monotonic() >= self.retry_at["measurements"]:
            count = min(len(self.ticks), max(1, fleet.batch_rows // self.meters))
            encoding = fleet.bodies.encoding
            body = self._measurement_body(fleet, count)
            rows = count * self.meters
            if not await self._send(session, fleet, policy, "measurements", body, rows, encoding):
                break
            for _ in range(count):
                self.ticks.popleft()
        if fleet.restarted_at is not None and not self.ticks and not self.pending:
            fleet.caught_up(self.index)

    async def _send(
        self,
        session: aiohttp.ClientSession,
        fleet: Fleet,
        policy: RetryPolicy,
        batch_type: str,
        body: bytes,
        rows: int,
        encoding: str,
    ) -> bool:
        phase, started = fleet.phase, time.monotonic()
        attempt = self.failures[batch_type]
        retry_after: float | None = None
        detail = ""
        headers = self._headers(batch_type, encoding, body)
        try:
            async with session.post(fleet.url, data=body, headers=headers) as r:
                answer = await r.read()
                status = str(r.status)
                retry_after = parse_retry_after(r.headers.get("Retry-After"))
                if r.status != 200:
                    detail = _detail(answer)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            status = type(exc).__name__
        done = time.monotonic()
        fleet.records.append(
            BatchRecord(
                phase,
                batch_type,
                started,
                done - started,
                status,
                rows,
                len(body),
                encoding,
                detail,
                attempt,
            )
        )
        if status == "200":
            self.failures[batch_type] = 0
            return True
        self.failures[batch_type] += 1
        event = RetryEvent.RETRY_LATER if status in ("429", "503") else RetryEvent.TRANSIENT
        delay = policy.delay(event, self.failures[batch_type], retry_after_s=retry_after)
        self.retry_at[batch_type] = done + delay
        return False


def _detail(answer: bytes) -> str:
    """The `detail` of an error answer ("" when it has none or is not ingestd's JSON)."""
    try:
        decoded = msgspec.json.decode(answer)
    except msgspec.DecodeError:
        return ""
    detail = decoded.get("detail") if isinstance(decoded, dict) else None
    return detail[:60] if isinstance(detail, str) else ""


def latency(records: Sequence[BatchRecord]) -> dict[str, Any]:
    """Requests, statuses, rows stored and the latency percentiles of the 200s, in ms."""
    ok = sorted(r.latency_s * 1000 for r in records if r.status == "200")
    out: dict[str, Any] = {
        "requests": len(records),
        "ok": len(ok),
        "statuses": dict(Counter(r.status for r in records)),
        "rows_ok": sum(r.rows for r in records if r.status == "200"),
        "wire_bytes_mean": statistics.fmean(r.wire_bytes for r in records) if records else None,
    }
    if len(ok) >= 2:
        q = statistics.quantiles(ok, n=100, method="inclusive")
        out.update(p50_ms=q[49], p95_ms=q[94], p99_ms=q[98], max_ms=ok[-1])
    return out
