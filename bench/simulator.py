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

The bodies are built before the clock starts (`bodies.py`: `ValuePool` gives every body its own
values, in JSON or the columnar encoding, `PreEncoded` the same pre-compressed batches to all).
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
from typing import Any, Literal

import aiohttp
import msgspec
import psycopg
from bodies import Bodies, Tick, body_headers, full_set_bodies
from fleetcore import generate_token, hash_token, token_hint
from fleetcore.protocol import BATCH_TYPE_HEADER, TOKEN_HEADER
from pusher.retry import RetryEvent, RetryPolicy, parse_retry_after

__all__ = [
    "TYPES",
    "BatchRecord",
    "Fleet",
    "Gateway",
    "build_gateways",
    "latency",
    "register_gateways",
    "session",
]

BATCH_ROWS = 5_000  # the pusher's PUSHER_BATCH_SIZE default
TYPES = ("sites", "devices", "measurements")

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


def build_gateways(
    tokens: Sequence[str], interval_s: float, meters: tuple[int, int], rng: random.Random
) -> list[Gateway]:
    """A gateway per token, each with meters in the `meters` range (a site per 20), a random
    phase within the interval, and a random sample lag within it (`Gateway.sample_lag_s`, drawn
    from its own generator so the fleet's meters and phases stay as `rng` makes them); full sets
    included."""
    out = []
    lags = random.Random(len(tokens))
    for i, token in enumerate(tokens):
        count = rng.randint(*meters)
        sites_body, devices_body = full_set_bodies(i, count, 1 + count // 20)
        gateway = Gateway(i, token, count, rng.uniform(0, interval_s), sites_body, devices_body)
        gateway.sample_lag_s = lags.uniform(0, interval_s)
        out.append(gateway)
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
    sample_lag_s: float = 0.0
    """How long before its tick the gateway's meters were sampled (one poll of all its meters):
    a tick ships the samples taken since the last, as the pusher does, so a tick in an hour's
    first minute can carry samples of the hour before, which marks that hour (on TimescaleDB
    only such late samples mark an ended hour: the hour's-end work a real fleet causes)."""

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
        sampled = datetime.now(UTC) - timedelta(seconds=self.sample_lag_s)
        self.ticks.append((self.tick_count, sampled.replace(microsecond=0)))
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
