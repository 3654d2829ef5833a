"""The pusher's HTTP/1.1 connection (`pusher.delivery.http11`) against a raw asyncio server:
kept alive while the server allows (interim answers skipped), reopened when the server closed it
while idle, and a refused connection reported as ConnectionFailed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest
from pusher.delivery.http11 import ConnectionFailed, HttpConnection

Served = tuple[str, list[int], asyncio.Event]
ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nDate: Sun, 06 Dec 2026 10:00:00 GMT\r\n\r\nok"


async def _serve(answer: Callable[[int], bytes], close_after: bool) -> AsyncIterator[Served]:
    """A server answering every request with `answer`: its URL, one entry per connection, and
    an event set each time the server has closed one."""
    connections: list[int] = []
    closed = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(len(connections))
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                await reader.readexactly(length)
                writer.write(answer(len(connections)))
                await writer.drain()
                if close_after:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            await writer.wait_closed()
            closed.set()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        yield f"http://127.0.0.1:{port}/api/fleet/ingest", connections, closed


@pytest.fixture
async def kept_alive() -> AsyncIterator[Served]:
    async for served in _serve(lambda _: b"HTTP/1.1 100 Continue\r\n\r\n" + ANSWER, False):
        yield served


@pytest.fixture
async def closing() -> AsyncIterator[Served]:
    async for served in _serve(lambda _: ANSWER, True):
        yield served


async def test_one_connection_serves_every_request_while_the_server_keeps_it(
    kept_alive: Served,
) -> None:
    """Three requests, one connection; the interim 100 is skipped and each answer read whole."""
    url, connections, _ = kept_alive
    http = HttpConnection(url, None)
    for _ in range(3):
        answer = await http.request("POST", "/api/fleet/ingest", {"X-A": "1"}, b"body", 1024)
        assert (answer.status, answer.body, answer.headers["date"][:3]) == (200, b"ok", "Sun")
    http.close()
    assert connections == [0]


async def test_a_connection_the_server_closed_while_idle_is_reopened(
    closing: Served,
) -> None:
    """A server that closes after each answer costs a new connection per request, never a
    failed request."""
    url, connections, closed = closing
    http = HttpConnection(url, None)
    for _ in range(3):
        answer = await http.request("POST", "/api/fleet/ingest", {}, b"x", 1024)
        assert answer.status == 200
        await asyncio.wait_for(closed.wait(), 10)  # the server closed it: the client is idle
        closed.clear()
        await asyncio.sleep(0.01)  # one more pass of the loop delivers the close
    http.close()
    assert len(connections) == 3


async def test_nothing_listening_is_a_connection_failure() -> None:
    """A refused connection raises ConnectionFailed (the daemon retries it)."""
    with pytest.raises(ConnectionFailed):
        await HttpConnection("http://127.0.0.1:9/", None).request("POST", "/", {}, b"", 10)
