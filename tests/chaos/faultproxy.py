"""A fault-injecting TCP proxy on loopback, standing in for a bad network (no `tc netem` here).

    proxy = FaultProxy(upstream_port)          # listens on 127.0.0.1:<proxy.port>
    await proxy.start()
    proxy.set(NetFault.RESET_RESPONSE, count=3)   # the next 3 connections lose their answer
    ...
    await proxy.close()

Faults apply per exchange: each request on a connection (keep-alive included: the client
speaking again after an answer starts a new exchange) draws the fault that is set, for the next
`count` exchanges or, with `probability`, for a random share of them:

- `REFUSE`: the listener is closed, so connecting fails with ECONNREFUSED (as a stopped server);
- `RESET_REQUEST`: after `after_bytes` of the request reached upstream, both sides get a TCP RST;
- `RESET_RESPONSE`: the request reaches upstream whole; when the first byte of the answer comes
  back, the client gets a RST instead (the server may have committed, the client never knows);
- `DELAY_RESPONSE`: the answer is held `delay_s` before it is forwarded (past a client timeout);
- `THROTTLE`: both directions trickle at `bytes_per_s`.

`ThreadedLoop` runs the proxy (or any coroutine-based server) on a thread of its own for
synchronous tests. Every connection is closed by `close()`; nothing outlives the proxy.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import random
import socket
import struct
import threading
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

__all__ = ["FaultProxy", "NetFault", "ProxyStats", "ThreadedLoop"]

_CHUNK = 16 * 1024
T = TypeVar("T")


class NetFault(enum.Enum):
    """A fault of the network between the pusher and ingestd (see the module docstring)."""

    NONE = "none"
    REFUSE = "refuse"
    RESET_REQUEST = "reset_request"
    RESET_RESPONSE = "reset_response"
    DELAY_RESPONSE = "delay_response"
    THROTTLE = "throttle"


@dataclass
class ProxyStats:
    connections: int = 0
    faults_injected: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    by_fault: dict[str, int] = field(default_factory=dict)

    def injected(self, fault: NetFault) -> None:
        self.faults_injected += 1
        self.by_fault[fault.value] = self.by_fault.get(fault.value, 0) + 1


@dataclass(frozen=True)
class _Plan:
    fault: NetFault = NetFault.NONE
    after_bytes: int = 0
    delay_s: float = 0.0
    bytes_per_s: int = 0
    count: int | None = None
    probability: float = 1.0


@dataclass
class _Exchange:
    """One request and its answer on a connection (HTTP/1.1 without pipelining: the client
    speaking again after the server answered starts the next exchange, with a fresh draw)."""

    plan: _Plan = field(default_factory=_Plan)
    answered: bool = True
    sent: int = 0
    delayed: bool = False

    def next(self, plan: _Plan) -> None:
        self.plan, self.answered, self.sent, self.delayed = plan, False, 0, False


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP RST (SO_LINGER 0), not a FIN: the peer sees 'connection reset'."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class FaultProxy:
    """Forwards 127.0.0.1:`port` to 127.0.0.1:`upstream_port`, injecting the fault that is set."""

    def __init__(
        self, upstream_port: int, *, port: int = 0, upstream_host: str = "127.0.0.1", seed: int = 0
    ) -> None:
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self.port = port
        self.stats = ProxyStats()
        self._plan = _Plan()
        self._left: int | None = None
        self._rng = random.Random(seed)
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._control: set[asyncio.Task[None]] = set()
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        await self._listen()

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(
            self._handle, "127.0.0.1", self.port, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def _unlisten(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    def set(
        self,
        fault: NetFault,
        *,
        after_bytes: int = 0,
        delay_s: float = 0.0,
        bytes_per_s: int = 0,
        count: int | None = None,
        probability: float = 1.0,
    ) -> None:
        """Switch the fault for new connections (thread-safe). `REFUSE` closes the listener
        until another fault (or `NetFault.NONE`) is set; it ignores `count`."""
        with self._lock:
            self._plan = _Plan(fault, after_bytes, delay_s, bytes_per_s, count, probability)
            self._left = count
        if self._loop is None:
            return
        if fault is NetFault.REFUSE:
            self.stats.injected(fault)
            self._call(self._unlisten())
        elif self._server is None:
            self._call(self._listen())

    def clear(self) -> None:
        self.set(NetFault.NONE)

    def _call(self, coro: Coroutine[Any, Any, None]) -> None:
        assert self._loop is not None
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            task = self._loop.create_task(coro)
            self._control.add(task)
            task.add_done_callback(self._control.discard)
        else:
            asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=10)

    def _draw(self) -> _Plan:
        """The plan for a new connection, counting it against `count`."""
        with self._lock:
            plan = self._plan
            if plan.fault in (NetFault.NONE, NetFault.REFUSE):
                return _Plan()
            if self._left is not None and self._left <= 0:
                return _Plan()
            if plan.probability < 1.0 and self._rng.random() >= plan.probability:
                return _Plan()
            if self._left is not None:
                self._left -= 1
            return plan

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)  # type: ignore[arg-type]
        self.stats.connections += 1
        try:
            up_reader, up_writer = await asyncio.open_connection(
                self.upstream_host, self.upstream_port
            )
        except OSError:
            _reset(writer)
            self._tasks.discard(task)  # type: ignore[arg-type]
            return
        exchange = _Exchange()
        done = asyncio.Event()
        pumps = [
            asyncio.create_task(self._pump(reader, up_writer, exchange, upstream=True, done=done)),
            asyncio.create_task(self._pump(up_reader, writer, exchange, upstream=False, done=done)),
        ]
        try:
            await done.wait()
        finally:
            for pump in pumps:
                pump.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
            for w in (writer, up_writer):
                if exchange.plan.fault in (NetFault.RESET_REQUEST, NetFault.RESET_RESPONSE):
                    _reset(w)
                elif not w.transport.is_closing():
                    w.close()
            self._tasks.discard(task)  # type: ignore[arg-type]

    async def _pump(
        self,
        src: asyncio.StreamReader,
        dst: asyncio.StreamWriter,
        exchange: _Exchange,
        *,
        upstream: bool,
        done: asyncio.Event,
    ) -> None:
        """Copy one direction until EOF, applying the plan of the current exchange. The end of
        the answer direction, or an error or reset in either, ends the connection; a client's
        half-close does not."""
        try:
            while True:
                chunk = await src.read(_CHUNK)
                if not chunk:
                    if dst.can_write_eof():
                        dst.write_eof()
                    if upstream:
                        return  # half-close: the answer may still come back
                    break
                if upstream and exchange.answered:
                    exchange.next(self._draw())
                    if exchange.plan.fault is not NetFault.NONE:
                        self.stats.injected(exchange.plan.fault)
                elif not upstream:
                    exchange.answered = True
                plan = exchange.plan
                if upstream and plan.fault is NetFault.RESET_REQUEST:
                    room = plan.after_bytes - exchange.sent
                    if len(chunk) > room:
                        if room > 0:
                            dst.write(chunk[:room])
                            await dst.drain()
                            self.stats.bytes_up += room
                        break
                if not upstream and plan.fault is NetFault.RESET_RESPONSE:
                    break
                if not upstream and plan.fault is NetFault.DELAY_RESPONSE and not exchange.delayed:
                    exchange.delayed = True
                    await asyncio.sleep(plan.delay_s)
                if plan.fault is NetFault.THROTTLE and plan.bytes_per_s > 0:
                    step = max(1, plan.bytes_per_s // 20)
                    for start in range(0, len(chunk), step):
                        dst.write(chunk[start : start + step])
                        await dst.drain()
                        await asyncio.sleep(step / plan.bytes_per_s)
                else:
                    dst.write(chunk)
                    await dst.drain()
                if upstream:
                    exchange.sent += len(chunk)
                    self.stats.bytes_up += len(chunk)
                else:
                    self.stats.bytes_down += len(chunk)
        except (OSError, asyncio.IncompleteReadError):
            pass
        done.set()

    async def settled(self) -> None:
        """Wait until a `set()` made from the proxy's own loop has taken effect."""
        await asyncio.gather(*self._control)

    async def close(self) -> None:
        await self.settled()
        await self._unlisten()
        tasks = [t for t in self._tasks if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class ThreadedLoop:
    """An event loop on a daemon thread, for hosting async servers in synchronous tests."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="chaos-loop", daemon=True
        )
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=timeout)

    def close(self) -> None:
        """Cancel whatever still runs on the loop (server handlers included), then stop it."""

        async def cancel_all() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        with contextlib.suppress(Exception):
            self.run(cancel_all(), timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()

    def __enter__(self) -> ThreadedLoop:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
