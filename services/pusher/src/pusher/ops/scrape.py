"""The metrics listener: `GET /metrics` on PUSHER_METRICS_HOST:PUSHER_METRICS_PORT, from the
daemon's own event loop.

Served over asyncio streams with h11 (the library the pusher's client speaks HTTP/1.1 with),
not an HTTP server framework: a scrape every few seconds needs none, and aiohttp's server cost a
gateway ~10 MiB. The body is `prom.py`'s: text 0.0.4 or OpenMetrics as the scraper's
`Accept` asks, gzip when its `Accept-Encoding` takes it. `HEAD /metrics` gives the headers alone;
any other path is 404, any other method 405. A connection idle for `IDLE_S` is closed, and at
most `MAX_CONNECTIONS` are served at once (more are closed at once): a stuck or hostile scraper
costs a few KiB, never the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
from collections.abc import AsyncIterator

import h11

from pusher.errors import ConfigError
from pusher.ops.prom import Registry, choose_format, gzip_accepted

__all__ = ["IDLE_S", "MAX_CONNECTIONS", "serve_metrics"]

IDLE_S = 30.0
MAX_CONNECTIONS = 4
_PATH = b"/metrics"


@contextlib.asynccontextmanager
async def serve_metrics(registry: Registry, host: str, port: int) -> AsyncIterator[str]:
    """Serve `GET /metrics` on host:port for the body of the `async with`; yields the URL. A
    port that cannot be listened on is a ConfigError naming PUSHER_METRICS_PORT."""
    served: set[asyncio.Task[None]] = set()

    async def connected(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is None or len(served) >= MAX_CONNECTIONS:
            writer.transport.abort()
            return
        served.add(task)
        try:
            await _serve_connection(reader, writer, registry)
        except (OSError, TimeoutError, h11.ProtocolError):
            pass
        finally:
            writer.transport.abort()
            served.discard(task)

    try:
        server = await asyncio.start_server(connected, host, port)
    except OSError as exc:
        raise ConfigError(
            f"PUSHER_METRICS_PORT: cannot listen on {host}:{port}: {exc.strerror or exc}"
        ) from None
    try:
        yield f"http://{host}:{port}/metrics"
    finally:
        server.close()
        for task in list(served):
            task.cancel()
        await asyncio.gather(*served, return_exceptions=True)
        await server.wait_closed()


async def _serve_connection(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, registry: Registry
) -> None:
    """Answer the requests of one kept-alive connection until either side closes it."""
    conn = h11.Connection(h11.SERVER)
    while True:
        async with asyncio.timeout(IDLE_S):
            request = await _next_request(reader, conn)
        if request is None:
            return
        status, headers, body = _answer(registry, request)
        writer.write(conn.send(h11.Response(status_code=status, headers=headers)) or b"")
        if request.method != b"HEAD":
            writer.write(conn.send(h11.Data(data=body)) or b"")
        writer.write(conn.send(h11.EndOfMessage()) or b"")
        await writer.drain()
        if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
            return
        conn.start_next_cycle()


async def _next_request(reader: asyncio.StreamReader, conn: h11.Connection) -> h11.Request | None:
    """The next request, its body (a scrape has none) read and ignored; None at the end."""
    request: h11.Request | None = None
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(await reader.read(16 * 1024))
        elif isinstance(event, h11.Request):
            request = event
        elif isinstance(event, h11.EndOfMessage):
            return request
        elif isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
            return None


def _answer(registry: Registry, request: h11.Request) -> tuple[int, list[tuple[str, str]], bytes]:
    """(status, headers, body) for one request."""
    path = request.target.split(b"?", 1)[0]
    if path != _PATH:
        return _text(404, "not found: the metrics are at /metrics")
    if request.method not in (b"GET", b"HEAD"):
        status, headers, body = _text(405, "use GET")
        return status, [*headers, ("Allow", "GET, HEAD")], body
    accept = b",".join(v for k, v in request.headers if k == b"accept").decode("latin-1")
    coding = b",".join(v for k, v in request.headers if k == b"accept-encoding")
    write, content_type = choose_format(accept)
    body = write(registry)
    headers = [("Content-Type", content_type)]
    if gzip_accepted(coding.decode("latin-1")):
        body = gzip.compress(body, compresslevel=6, mtime=0)
        headers.append(("Content-Encoding", "gzip"))
    return 200, [*headers, ("Content-Length", str(len(body)))], body


def _text(status: int, message: str) -> tuple[int, list[tuple[str, str]], bytes]:
    body = f"{message}\n".encode()
    return status, [("Content-Type", "text/plain; charset=utf-8"),
                    ("Content-Length", str(len(body)))], body  # fmt: skip
