"""The fault front: a real HTTP server between the pusher and a real ingestd that answers what
the test scripts (an overload, a refusal) or what no ingestd would (a proxy, a captive portal, a
default vhost, a broken load balancer), and forwards everything else to ingestd.

    front = FaultFront(upstream_url)          # listens on 127.0.0.1:<front.port>
    await front.start()                       # (or the `fault_front` fixture, before the
    front.plan(Answer.json(503, headers=...)) #  test's in-process ingestd)
    front.refuse = lambda items: len(items) > 120   # 413 payload_too_large by rule
    front.stall_request = 3                   # hold ingestd's 3rd measurements answer
    ...
    await front.close()

It speaks HTTP/1.1 over raw asyncio streams, so an answer can be anything at all: a garbage
status line, 1xx interim answers, headers with unicode, NUL or 64 KiB values, a body cut short
or trickled slowly, the connection closed without a word. A planned answer goes to the next
request of its batch type (measurements unless said), in order, instead of ingestd's (the rows
are not stored) or, with `forward_first`, after ingestd stored the batch (the real answer is
lost). With `stall_request` set to n, ingestd's answer to the n-th measurements request is held
(after ingestd committed it) until `release` is set. Every request is recorded with the rows it
carried and what it was answered, so a test can tell whether the pusher sent the same rows again
(cursor kept) or moved on, and when.

Only Retry-After of ingestd's answers is passed back: without `Accept-Post` the pusher keeps
sending JSON, which the front reads. Faults below HTTP (refused connections, resets, delays,
throttling) are the TCP proxy's, tests/chaos/faultproxy.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from ingestd.app import INGEST_PATH

from tests.fix_ingestd import ingest_url

__all__ = ["Answer", "Counts", "FaultFront", "Request", "fault_front"]

_MAX_HEAD = 256 * 1024
_FORWARDED = (
    "x-customer-token",
    "x-batch-type",
    "x-push-cursor",
    "content-type",
    "content-encoding",
)


@dataclass(frozen=True)
class Counts:
    """A JSON body shaped like ingestd's 200 answer that does NOT answer this batch: rendered
    for the batch it answers, it never has counts that are all non-negative integers adding up
    to the rows sent together with the right batch type (that would be indistinguishable from
    ingestd's own answer)."""

    accepted: int | str | None = 0
    duplicates: int | str | None = 0
    rejected: int | str | None = 0
    offset: int = 1
    batch_type: str | None = "measurements"
    errors_depth: int = 0

    def render(self, rows: int, batch_type: str) -> bytes:
        accepted = self.accepted
        if isinstance(accepted, int):
            accepted = rows + accepted  # relative to the rows sent
        body: dict[str, Any] = {}
        for name, value in (
            ("accepted", accepted),
            ("duplicates", self.duplicates),
            ("rejected", self.rejected),
        ):
            if value is not None:
                body[name] = value
        if self.batch_type is not None:
            body["batch_type"] = self.batch_type
        counts = [body.get(k) for k in ("accepted", "duplicates", "rejected")]
        valid = (
            all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in counts)
            and sum(c for c in counts if isinstance(c, int)) == rows
            and body.get("batch_type") == batch_type
        )
        if valid:
            body["accepted"] = int(body["accepted"]) + max(1, self.offset)
        text = json.dumps(body)
        if self.errors_depth:
            nested = "[" * self.errors_depth + "]" * self.errors_depth
            text = text[:-1] + f', "errors": {nested}}}'
        return text.encode()


@dataclass(frozen=True)
class Answer:
    """What the front writes back instead of ingestd's answer, to a request of `batch_type`."""

    label: str
    status_line: bytes = b"HTTP/1.1 200 OK"
    headers: tuple[tuple[bytes, bytes], ...] = ()
    body: bytes | Counts = b""
    interim: tuple[bytes, ...] = ()
    content_length: bool = True
    forward_first: bool = False
    cut_at: int | None = None
    trickle_s: float = 0.0
    batch_type: str = "measurements"
    close: bool = True

    @classmethod
    def json(
        cls,
        status: int,
        body: dict[str, Any] | None = None,
        *,
        headers: dict[str, str] | None = None,
        batch_type: str = "measurements",
    ) -> Answer:
        """A well-formed JSON answer (what a real server in trouble gives), keeping the
        connection open."""
        return cls(
            label=f"json:{status}",
            status_line=b"HTTP/1.1 %d X" % status,
            headers=(
                (b"Content-Type", b"application/json"),
                *((k.encode(), v.encode()) for k, v in (headers or {}).items()),
            ),
            body=json.dumps(body or {}).encode(),
            batch_type=batch_type,
            close=False,
        )

    @property
    def status(self) -> int | None:
        """The status code of the status line, None when it has none."""
        parts = self.status_line.split(b" ")
        return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None

    def __repr__(self) -> str:
        body = repr(self.body) if isinstance(self.body, Counts) else _short(self.body)
        headers = ", ".join(f"{_short(k)}: {_short(v)}" for k, v in self.headers)
        return (
            f"Answer({self.label}, {_short(self.status_line)}, [{headers}], body={body}, "
            f"interim={len(self.interim)}, content_length={self.content_length}, "
            f"forward_first={self.forward_first}, cut_at={self.cut_at}, "
            f"trickle_s={self.trickle_s})"
        )

    def wire(self, rows: int, batch_type: str) -> bytes:
        body = self.body.render(rows, batch_type) if isinstance(self.body, Counts) else self.body
        lines = [b"%s\r\n\r\n" % line for line in self.interim]
        head = [self.status_line, *(b"%s: %s" % kv for kv in self.headers)]
        if self.content_length and not any(k.lower() == b"content-length" for k, _ in self.headers):
            head.append(b"Content-Length: %d" % len(body))
        if self.close:
            head.append(b"Connection: close")
        wire = b"".join(lines) + b"\r\n".join(head) + b"\r\n\r\n" + body
        return wire if self.cut_at is None else wire[: self.cut_at]


# ingestd's own 413 (its JSON body), as the `refuse` rule answers it.
_TOO_LARGE = Answer.json(413, {"error": "payload_too_large", "max_bytes": 1})


def _short(value: bytes, limit: int = 60) -> str:
    text = repr(value[:limit])
    return text + (f"…(+{len(value) - limit} bytes)" if len(value) > limit else "")


@dataclass
class Request:
    """One request as the front received it and what it did with it: `answer` is the planned
    answer's label ("forwarded" for ingestd's own, "refused" for the `refuse` rule's 413),
    `status` the status the pusher was given (None for a status line without one),
    `upstream_status` ingestd's (None when not forwarded)."""

    at: float
    batch_type: str
    keys: frozenset[tuple[int, str]]
    cursor: str | None
    rows: int
    answer: str = "forwarded"
    status: int | None = None
    upstream_status: int | None = None
    answered_at: float | None = None


@dataclass
class _Incoming:
    method: bytes
    headers: dict[str, str]
    body: bytes
    keep_alive: bool = True
    items: list[dict[str, Any]] = field(default_factory=list)


def _items(headers: dict[str, str], body: bytes) -> list[dict[str, Any]]:
    try:
        raw = gzip.decompress(body) if headers.get("content-encoding") == "gzip" else body
        decoded = json.loads(raw)
        return list(decoded["items"]) if isinstance(decoded, dict) else []
    except (OSError, ValueError, KeyError, TypeError):
        return []


async def _read_request(reader: asyncio.StreamReader) -> _Incoming | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
        return None
    lines = head.decode("latin-1").split("\r\n")
    method = lines[0].split(" ", 1)[0].encode()
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0") or 0)
    try:
        body = await reader.readexactly(length) if length else b""
    except (asyncio.IncompleteReadError, OSError):
        return None
    keep = headers.get("connection", "").lower() != "close"
    return _Incoming(method, headers, body, keep, _items(headers, body))


class FaultFront:
    """Forwards to `upstream` (ingestd's ingest URL) except for the planned answers, the
    `refuse` rule's and the stalled one."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.port = 0
        self.planned: deque[Answer] = deque()
        self.refuse: Callable[[list[dict[str, Any]]], bool] | None = None
        self.stall_request: int | None = None
        self.stalled = asyncio.Event()
        self.release = asyncio.Event()
        self.requests: list[Request] = []
        self._server: asyncio.Server | None = None
        self._session: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{INGEST_PATH}"

    def plan(self, *answers: Answer) -> None:
        """Queue answers; each goes to the next request of its batch type (thread-safe)."""
        self.planned.extend(answers)

    def measurements(self) -> list[Request]:
        return [r for r in self.requests if r.batch_type == "measurements"]

    def statuses(self, batch_type: str = "measurements") -> list[int | None]:
        return [r.status for r in self.requests if r.batch_type == batch_type]

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, limit=_MAX_HEAD)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        self.release.set()
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)
        if self._session is not None:
            await self._session.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            while True:
                incoming = await _read_request(reader)
                if incoming is None or not await self._answer(incoming, writer):
                    break
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            self._tasks.discard(task)
            with contextlib.suppress(Exception):
                writer.close()

    async def _forward(self, incoming: _Incoming) -> tuple[int, bytes, str | None]:
        assert self._session is not None
        headers = {k: v for k, v in incoming.headers.items() if k in _FORWARDED}
        try:
            async with self._session.post(
                self.upstream, data=incoming.body, headers=headers, allow_redirects=False
            ) as resp:
                return resp.status, await resp.read(), resp.headers.get("Retry-After")
        except (aiohttp.ClientError, OSError, TimeoutError):
            return 502, b'{"error":"bad_gateway"}', None

    def _planned(self, batch_type: str) -> Answer | None:
        with contextlib.suppress(IndexError):
            if self.planned[0].batch_type == batch_type:
                return self.planned.popleft()
        return None

    async def _answer(self, incoming: _Incoming, writer: asyncio.StreamWriter) -> bool:
        """Answer one request; whether the connection stays open for the next."""
        batch_type = incoming.headers.get("x-batch-type", "")
        items = incoming.items
        keys = frozenset((int(i.get("device_id", -1)), str(i.get("time"))) for i in items)
        cursor = incoming.headers.get("x-push-cursor")
        request = Request(time.monotonic(), batch_type, keys, cursor, len(items))
        self.requests.append(request)
        answer = self._planned(batch_type)
        if answer is None and batch_type == "measurements" and self.refuse and self.refuse(items):
            request.answer, request.status = "refused", 413
            await self._write(writer, _TOO_LARGE.wire(0, batch_type), 0)
            request.answered_at = time.monotonic()
            return incoming.keep_alive
        if answer is None or answer.forward_first:
            status, body, retry_after = await self._forward(incoming)
            request.upstream_status = request.status = status
            if answer is None:
                if batch_type == "measurements" and len(self.measurements()) == self.stall_request:
                    self.stalled.set()  # ingestd has committed the batch; its answer waits
                    await self.release.wait()
                extra = b"Retry-After: %s\r\n" % retry_after.encode() if retry_after else b""
                await self._write(
                    writer,
                    b"HTTP/1.1 %d X\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                    b"%s\r\n%s" % (status, len(body), extra, body),
                    0,
                )
                request.answered_at = time.monotonic()
                return incoming.keep_alive
        request.answer, request.status = answer.label, answer.status
        await self._write(writer, answer.wire(len(items), batch_type), answer.trickle_s)
        request.answered_at = time.monotonic()
        return not answer.close and incoming.keep_alive

    @staticmethod
    async def _write(writer: asyncio.StreamWriter, wire: bytes, trickle_s: float) -> None:
        if trickle_s <= 0:
            writer.write(wire)
            await writer.drain()
            return
        pieces = 10
        step = max(1, len(wire) // pieces)
        for start in range(0, len(wire), step):
            writer.write(wire[start : start + step])
            await writer.drain()
            await asyncio.sleep(trickle_s / pieces)


@pytest.fixture
async def fault_front(ingestd_server: TestServer) -> AsyncIterator[FaultFront]:
    """A fault front forwarding to the test's in-process ingestd."""
    front = FaultFront(ingest_url(ingestd_server))
    await front.start()
    try:
        yield front
    finally:
        await front.close()
