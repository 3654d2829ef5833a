"""The fault proxy itself, against a trivial echo server and a trivial HTTP server."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest
from aiohttp import web

from tests.chaos.faultproxy import FaultProxy, NetFault, ThreadedLoop

TIMEOUT = aiohttp.ClientTimeout(total=5)


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(4096):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        writer.close()


@pytest.fixture
async def echo_proxy() -> AsyncIterator[FaultProxy]:
    """A proxy in front of an echo server."""
    server = await asyncio.start_server(_echo, "127.0.0.1", 0)
    proxy = FaultProxy(server.sockets[0].getsockname()[1])
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.close()
        server.close()
        await server.wait_closed()


@dataclass
class Http:
    proxy: FaultProxy
    handled: list[int]

    @property
    def url(self) -> str:
        return self.proxy.url + "/echo"


@pytest.fixture
async def http() -> AsyncIterator[Http]:
    """A proxy in front of an HTTP server that records each request it finished handling."""
    handled: list[int] = []

    async def echo(request: web.Request) -> web.Response:
        body = await request.read()
        handled.append(len(body))
        return web.Response(body=body)

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/echo", echo)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    proxy = FaultProxy(port)
    await proxy.start()
    try:
        yield Http(proxy, handled)
    finally:
        await proxy.close()
        await runner.cleanup()


async def _roundtrip(port: int, payload: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(payload)
        await writer.drain()
        writer.write_eof()
        return await asyncio.wait_for(reader.read(-1), 5)
    finally:
        writer.close()


async def test_without_fault_bytes_pass_both_ways(echo_proxy: FaultProxy) -> None:
    """With no fault set, a payload (including after a half-close) comes back byte for byte."""
    payload = bytes(range(256)) * 1000
    assert await _roundtrip(echo_proxy.port, payload) == payload
    assert echo_proxy.stats.faults_injected == 0
    assert echo_proxy.stats.bytes_up == echo_proxy.stats.bytes_down == len(payload)


async def test_refuse_closes_the_listener_until_cleared(echo_proxy: FaultProxy) -> None:
    """REFUSE makes connecting fail with ECONNREFUSED; clearing it listens again on the same port."""
    port = echo_proxy.port
    echo_proxy.set(NetFault.REFUSE)
    await echo_proxy.settled()
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", port)
    echo_proxy.clear()
    await echo_proxy.settled()
    assert echo_proxy.port == port
    assert await _roundtrip(port, b"back") == b"back"


async def test_reset_request_cuts_after_n_bytes(http: Http) -> None:
    """RESET_REQUEST passes only the first N bytes upstream, then resets: the server never
    handles the request and the client gets a connection error."""
    http.proxy.set(NetFault.RESET_REQUEST, after_bytes=300, count=1)
    async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
        with pytest.raises(aiohttp.ClientError):
            async with session.post(http.url, data=b"x" * 100_000) as resp:
                await resp.read()
        await asyncio.sleep(0.1)
        assert http.handled == []
        assert http.proxy.stats.bytes_up == 300
        async with session.post(http.url, data=b"ok") as resp:  # count=1: the next one passes
            assert await resp.read() == b"ok"
    assert http.handled == [2]


async def test_reset_response_loses_the_answer_of_a_handled_request(http: Http) -> None:
    """RESET_RESPONSE lets the request be handled in full but resets the client before any of
    the answer reaches it (the 'committed, response lost' case)."""
    http.proxy.set(NetFault.RESET_RESPONSE, count=1)
    async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
        with pytest.raises(aiohttp.ClientError):
            async with session.post(http.url, data=b"y" * 5000) as resp:
                await resp.read()
    assert http.handled == [5000]
    assert http.proxy.stats.bytes_down == 0
    assert http.proxy.stats.by_fault == {"reset_response": 1}


async def test_delay_response_trips_a_client_timeout(http: Http) -> None:
    """DELAY_RESPONSE holds the answer past a short client timeout; a patient client gets it."""
    http.proxy.set(NetFault.DELAY_RESPONSE, delay_s=0.6)
    async with aiohttp.ClientSession() as session:
        with pytest.raises(TimeoutError):
            async with session.post(
                http.url, data=b"z", timeout=aiohttp.ClientTimeout(total=0.3)
            ) as resp:
                await resp.read()
        started = time.monotonic()
        async with session.post(http.url, data=b"z", timeout=TIMEOUT) as resp:
            assert await resp.read() == b"z"
        assert time.monotonic() - started >= 0.55
    assert len(http.handled) == 2


async def test_throttle_limits_bandwidth(http: Http) -> None:
    """THROTTLE at 100 kB/s makes a 40 kB upload take about 0.4 s, and it arrives intact."""
    http.proxy.set(NetFault.THROTTLE, bytes_per_s=100_000)
    payload = bytes(range(200)) * 200
    started = time.monotonic()
    async with (
        aiohttp.ClientSession(timeout=TIMEOUT) as session,
        session.post(http.url, data=payload) as resp,
    ):
        assert await resp.read() == payload
    elapsed = time.monotonic() - started
    assert 0.35 <= elapsed < 3.0
    assert http.handled == [len(payload)]


async def test_probability_and_count_bound_the_faults(http: Http) -> None:
    """With a probability only some connections are hit, never more than `count`."""
    http.proxy.set(NetFault.RESET_RESPONSE, probability=0.5, count=3)
    failures = 0
    for _ in range(12):
        async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
            try:
                async with session.post(http.url, data=b"p") as resp:
                    await resp.read()
            except aiohttp.ClientError:
                failures += 1
    assert failures == http.proxy.stats.faults_injected
    assert 1 <= failures <= 3
    assert len(http.handled) == 12


def test_threaded_loop_hosts_the_proxy_for_sync_code() -> None:
    """A proxy on a ThreadedLoop is switched from plain synchronous code, REFUSE included."""
    import socket

    with ThreadedLoop() as loop:
        server = loop.run(asyncio.start_server(_echo, "127.0.0.1", 0))
        proxy = FaultProxy(server.sockets[0].getsockname()[1])
        loop.run(proxy.start())
        try:
            proxy.set(NetFault.REFUSE)
            with socket.socket() as sock, pytest.raises(ConnectionRefusedError):
                sock.connect(("127.0.0.1", proxy.port))
            proxy.clear()
            with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as sock:
                sock.sendall(b"ping")
                assert sock.recv(4) == b"ping"
        finally:
            loop.run(proxy.close())
            server.close()
            loop.run(server.wait_closed())


async def test_faults_apply_per_request_on_a_kept_alive_connection(http: Http) -> None:
    """A fault set while a keep-alive connection is open hits that connection's next request."""
    connector = aiohttp.TCPConnector(limit=1)
    async with aiohttp.ClientSession(timeout=TIMEOUT, connector=connector) as session:
        async with session.post(http.url, data=b"first") as resp:
            assert await resp.read() == b"first"
        http.proxy.set(NetFault.RESET_RESPONSE, count=1)
        with pytest.raises(aiohttp.ClientError):
            async with session.post(http.url, data=b"second") as resp:
                await resp.read()
        async with session.post(http.url, data=b"third") as resp:
            assert await resp.read() == b"third"
    assert http.handled == [5, 6, 5]
    assert http.proxy.stats.connections == 2
