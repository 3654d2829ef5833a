"""The simulated gateways of bench/fleet.py: what each one sends, when, and how it retries.

A gateway is its own customer with its own token, 1-3 sites and 5-50 meters. Every interval
(60 s, from a random phase) each meter takes one sample; the gateway then sends, in the pusher's
order, its sites and devices (full sets: every tick, or only the first tick once the pusher skips
unchanged sets) and its queued samples in measurement batches of up to 5,000 rows. A failed
request stops the round; the gateway tries again when the pusher would (Retry-After plus jitter
for 429/503, full-jitter exponential backoff otherwise, with the pusher's own `RetryPolicy`).

Bodies are what the pusher sends: JSON `{"items": [...]}` with the keys of the pusher's push
item, compressed by `pusher.delivery.gzip_body` at the pusher's default level. The value part of
each row comes from a pool of realistic samples encoded once before the clock starts; per tick
only the time and device id are spliced in, so the generator stays cheap.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import aiohttp
import msgspec
from common import generate_measurements
from fleetcore import MEASUREMENT_VALUE_FIELDS
from fleetcore.protocol import BATCH_TYPE_HEADER, TOKEN_HEADER
from pusher.delivery import gzip_body
from pusher.retry import RetryEvent, RetryPolicy, parse_retry_after

__all__ = ["BatchRecord", "Fleet", "Gateway", "ValuePool", "full_set_bodies"]

GZIP_LEVEL = 1  # the pusher's PUSHER_GZIP_LEVEL default
BATCH_ROWS = 5_000  # the pusher's PUSHER_BATCH_SIZE default
JITTER_S = 2.0  # PUSHER_RETRY_AFTER_JITTER_S default
BACKOFF_BASE_S, BACKOFF_CAP_S = 60.0, 1800.0  # PUSHER_BACKOFF_BASE_S / _CAP_S defaults
TYPES = ("sites", "devices", "measurements")


class ValuePool:
    """Encoded value parts (`"v1":230.4,…,"thd_i":3.1}`) of realistic samples, shared by all."""

    def __init__(self, size: int = 4096, seed: int = 3) -> None:
        rows = generate_measurements(size, devices=64, seed=seed)
        self.fragments = [
            msgspec.json.encode(dict(zip(MEASUREMENT_VALUE_FIELDS, row[3:], strict=True)))[1:]
            for row in rows
        ]

    def pick(self, gateway: int, meter: int, tick: int) -> bytes:
        return self.fragments[(gateway * 7919 + meter * 131 + tick) % len(self.fragments)]


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


@dataclass(slots=True)
class BatchRecord:
    phase: str
    batch_type: str
    sent_at: float
    latency_s: float
    status: str  # HTTP status, or the exception's name
    rows: int
    wire_bytes: int


@dataclass
class Fleet:
    """What all gateways share: the URL, the phase clock, the value pool, the records."""

    url: str
    pool: ValuePool
    interval_s: float
    full_sets_every_tick: bool
    reject_every: int  # one row in this many is dated 2 days ahead (refused, dead-lettered)
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


@dataclass
class Gateway:
    index: int
    token: str
    meters: int
    sites_body: bytes
    devices_body: bytes
    phase_s: float
    ticks: deque[tuple[int, datetime]] = field(default_factory=deque)
    pending: set[str] = field(default_factory=lambda: {"sites", "devices"})
    failures: int = 0
    retry_at: float = 0.0
    tick_count: int = 0
    _cached: tuple[tuple[int, int], bytes] | None = None

    def _headers(self, batch_type: str) -> dict[str, str]:
        return {
            TOKEN_HEADER: self.token,
            BATCH_TYPE_HEADER: batch_type,
            "Content-Type": "application/json",
            "Content-Encoding": "gzip",
        }

    def _tick(self, fleet: Fleet) -> None:
        now = datetime.now(UTC).replace(microsecond=0)
        self.ticks.append((self.tick_count, now))
        self.tick_count += 1
        fleet.rows_sampled += self.meters
        if fleet.full_sets_every_tick:
            self.pending.update(("sites", "devices"))

    def _measurement_body(self, fleet: Fleet, count: int) -> bytes:
        """The body of the first `count` queued ticks (kept while a retry re-sends the same)."""
        key = (self.ticks[0][0], count)
        if self._cached is not None and self._cached[0] == key:
            return self._cached[1]
        parts: list[bytes] = []
        ahead = timedelta(days=2)
        for i in range(count):
            tick, when = self.ticks[i]
            for meter in range(1, self.meters + 1):
                sample_no = self.index * 31 + tick * self.meters + meter
                refused = fleet.reject_every and sample_no % fleet.reject_every == 0
                at = when + ahead if refused else when
                stamp = at.isoformat().encode()
                parts.append(
                    b'{"time":"%s","device_id":%d,"received_at":"%s",%s'
                    % (stamp, meter, stamp, fleet.pool.pick(self.index, meter, tick))
                )
        body = gzip_body(b'{"items":[' + b",".join(parts) + b"]}", GZIP_LEVEL)
        self._cached = (key, body)
        return body

    async def run(
        self, session: aiohttp.ClientSession, fleet: Fleet, start: float, end: float
    ) -> None:
        rng = random.Random(self.index)
        next_tick = start + self.phase_s
        while (now := time.monotonic()) < end:
            while next_tick <= now:
                if fleet.producing:
                    self._tick(fleet)
                next_tick += fleet.interval_s
            if (self.pending or self.ticks) and now >= self.retry_at:
                await self._round(session, fleet, rng)
                continue
            wake = min(next_tick, end)
            if self.pending or self.ticks:
                wake = min(wake, self.retry_at)
            await _sleep_until(wake)

    async def _round(
        self, session: aiohttp.ClientSession, fleet: Fleet, rng: random.Random
    ) -> None:
        """Sites, devices, then the queued samples; stop at the first failure."""
        for batch_type in ("sites", "devices"):
            if batch_type in self.pending:
                body = self.sites_body if batch_type == "sites" else self.devices_body
                if not await self._send(session, fleet, rng, batch_type, body, 0):
                    return
                self.pending.discard(batch_type)
        while self.ticks:
            count = min(len(self.ticks), max(1, BATCH_ROWS // self.meters))
            body = self._measurement_body(fleet, count)
            if not await self._send(session, fleet, rng, "measurements", body, count * self.meters):
                return
            for _ in range(count):
                self.ticks.popleft()
        if fleet.restarted_at is not None:
            fleet.caught_up(self.index)

    async def _send(
        self,
        session: aiohttp.ClientSession,
        fleet: Fleet,
        rng: random.Random,
        batch_type: str,
        body: bytes,
        rows: int,
    ) -> bool:
        phase, started = fleet.phase, time.monotonic()
        retry_after: float | None = None
        try:
            async with session.post(fleet.url, data=body, headers=self._headers(batch_type)) as r:
                await r.read()
                status = str(r.status)
                retry_after = parse_retry_after(r.headers.get("Retry-After"))
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            status = type(exc).__name__
        done = time.monotonic()
        fleet.records.append(
            BatchRecord(phase, batch_type, started, done - started, status, rows, len(body))
        )
        if status == "200":
            self.failures = 0
            return True
        self.failures += 1
        event = RetryEvent.RETRY_LATER if status in ("429", "503") else RetryEvent.TRANSIENT
        policy = RetryPolicy(BACKOFF_BASE_S, BACKOFF_CAP_S, JITTER_S, rng)
        delay = policy.delay(event, self.failures, retry_after_s=retry_after)
        self.retry_at = done + delay
        return False


async def _sleep_until(moment: float) -> None:
    await asyncio.sleep(max(0.001, moment - time.monotonic()))
