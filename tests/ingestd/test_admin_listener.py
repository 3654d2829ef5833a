"""INGESTD_ADMIN_PORT: the read API, /metrics and /readyz on their own listener, the push
endpoint only on the public one; /readyz answers from state refreshed in the background."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from dataclasses import replace

import aiohttp
import pytest
from aiohttp import web
from fleetdev.pgcluster import free_port
from ingestd.app import INGEST_PATH, SERVER_OPTIONS, create_app
from ingestd.settings import Settings

from tests.samples import encode, site

ADMIN = "admin-" + "y" * 40


def _listen(port: int) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(16)
    sock.setblocking(False)
    return sock


@pytest.fixture
async def ports(ingestd_settings: Settings) -> AsyncIterator[tuple[int, int]]:
    """ingestd serving its public port and its admin port, as `ingestd serve` does."""
    public, admin = free_port(), free_port()
    settings = replace(ingestd_settings, admin_token=ADMIN, port=public, admin_port=admin)
    runner = web.AppRunner(create_app(settings), **SERVER_OPTIONS)
    await runner.setup()
    for port in (public, admin):
        await web.SockSite(runner, _listen(port)).start()
    try:
        yield public, admin
    finally:
        await runner.cleanup()


async def test_admin_surface_only_on_the_admin_port(
    ports: tuple[int, int], customer_token: str
) -> None:
    """The read API, /metrics and /readyz answer on the admin port and are 404 on the public
    one; pushes are taken on the public port only; /healthz answers on both."""
    public, admin = ports
    auth = {"Authorization": f"Bearer {ADMIN}"}
    push = {"X-Customer-Token": customer_token, "X-Batch-Type": "sites",
            "Content-Type": "application/json", "Content-Encoding": "gzip"}  # fmt: skip
    async with aiohttp.ClientSession() as http:
        for path in ("/api/fleet/customers", "/metrics", "/readyz", "/api/fleet/gateways"):
            async with http.get(f"http://127.0.0.1:{public}{path}", headers=auth) as resp:
                assert resp.status == 404, path
            async with http.get(f"http://127.0.0.1:{admin}{path}", headers=auth) as resp:
                assert resp.status == 200, path
        for port in (public, admin):
            async with http.get(f"http://127.0.0.1:{port}/healthz") as resp:
                assert resp.status == 200
        body = encode([site(1)])
        async with http.post(
            f"http://127.0.0.1:{public}{INGEST_PATH}", data=body, headers=push
        ) as resp:
            assert resp.status == 200
        async with http.post(
            f"http://127.0.0.1:{admin}{INGEST_PATH}", data=body, headers=push
        ) as resp:
            assert resp.status == 404


async def test_readyz_costs_no_query_per_request(ports: tuple[int, int]) -> None:
    """Many /readyz requests at once are answered from the background state: all 200, with the
    pool's 4 connections never exhausted by them."""
    _, admin = ports
    async with aiohttp.ClientSession() as http:

        async def ready() -> int:
            async with http.get(f"http://127.0.0.1:{admin}/readyz") as resp:
                return resp.status

        import asyncio

        statuses = await asyncio.gather(*(ready() for _ in range(200)))
    assert set(statuses) == {200}
