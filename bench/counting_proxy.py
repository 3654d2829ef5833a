"""A TCP proxy on loopback that counts the bytes a client sends upstream, split per HTTP request
and batch type (`X-Batch-Type`): what the pusher puts on the wire, all in (request lines,
headers, bodies), for `wire.py` and `reconcile.py`."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from dataclasses import dataclass, field

from fleetdev.pgcluster import free_port

__all__ = ["CountingProxy", "Request"]


@dataclass
class Request:
    batch_type: str
    head_bytes: int
    body_bytes: int

    @property
    def total(self) -> int:
        return self.head_bytes + self.body_bytes


@dataclass
class _Parser:
    """Splits one connection's client→server stream into requests (Content-Length bodies)."""

    sink: list[Request]
    buffer: bytearray = field(default_factory=bytearray)
    body_left: int = 0
    current: Request | None = None

    def feed(self, data: bytes) -> None:
        self.buffer += data
        while self.buffer:
            if self.current is not None:
                take = min(self.body_left, len(self.buffer))
                self.body_left -= take
                del self.buffer[:take]
                if self.body_left == 0:
                    self.sink.append(self.current)
                    self.current = None
                continue
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buffer[: end + 4])
            del self.buffer[: end + 4]
            headers = {
                k.strip().lower(): v.strip()
                for k, _, v in (
                    line.decode("latin-1").partition(":") for line in head.split(b"\r\n")[1:]
                )
            }
            self.body_left = int(headers.get("content-length", "0") or 0)
            self.current = Request(headers.get("x-batch-type", "-"), len(head), self.body_left)
            if self.body_left == 0:
                self.sink.append(self.current)
                self.current = None


class CountingProxy:
    """TCP proxy on 127.0.0.1 in a thread of its own; counts and splits the upstream bytes."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = free_port()
        self.requests: list[Request] = []
        self.connections = 0
        self.upstream_bytes = 0
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(
            asyncio.start_server(self._client, "127.0.0.1", self.port)
        )
        self._started.set()
        try:
            self._loop.run_forever()
        finally:
            server.close()
            self._loop.run_until_complete(server.wait_closed())
            self._loop.close()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        parser = _Parser(self.requests)

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, count: bool) -> None:
            with contextlib.suppress(ConnectionError):
                while data := await src.read(65536):
                    if count:
                        self.upstream_bytes += len(data)
                        parser.feed(data)
                    dst.write(data)
                    await dst.drain()
            with contextlib.suppress(OSError):
                dst.close()

        await asyncio.gather(pump(reader, up_writer, True), pump(up_reader, writer, False))

    def __enter__(self) -> CountingProxy:
        self._thread.start()
        self._started.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
