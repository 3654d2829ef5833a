"""ingestd fixtures: settings on the test's central database, an in-process server (on the
test's loop, or on a thread of its own), a customer and its token, rows counted centrally."""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import replace
from typing import Any

import psycopg
import pytest
from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient, TestServer
from ingestd.app import INGEST_PATH, SERVER_OPTIONS, create_app
from ingestd.customers import add_customer
from ingestd.keys import STORAGE
from ingestd.settings import Settings

from tests.fix_pg import scalar
from tests.samples import encode

PostBatch = Callable[..., Awaitable[ClientResponse]]


@pytest.fixture
def ingestd_settings(central_db: str) -> Settings:
    """Settings for a test ingestd: generous rate limits, short deadlines."""
    return Settings(
        database_url=central_db,
        rate_limit_per_s=1000.0,
        rate_limit_burst=1000,
        pool_timeout_s=2.0,
        connect_timeout_s=5.0,
        retry_after_s=7,
        rollup_settle_s=0.0,
        housekeeping_interval_s=3600.0,  # tests run housekeeping cycles themselves
    )


@pytest.fixture
async def ingestd_client(aiohttp_client: Any, ingestd_settings: Settings) -> TestClient[Any, Any]:
    """A real ingestd on a loopback port, with a real HTTP client."""
    server = TestServer(create_app(ingestd_settings))
    # TestServer drops options given to its constructor; start_server() is where they apply.
    await server.start_server(**SERVER_OPTIONS)
    client: TestClient[Any, Any] = await aiohttp_client(server)
    return client


@pytest.fixture
async def ingestd_server(ingestd_settings: Settings) -> AsyncIterator[TestServer]:
    """A real ingestd on a loopback port of the test's event loop."""
    server = TestServer(create_app(ingestd_settings), host="127.0.0.1")
    await server.start_server(**SERVER_OPTIONS)
    try:
        yield server
    finally:
        await server.close()


async def first_housekeeping_done(client: TestClient[Any, Any]) -> None:
    """Wait (bounded) until the app's own housekeeping loop has run its first cycle, so that it
    cannot pick dirty marks in the middle of a test that runs its cycles itself."""
    for _ in range(200):
        if client.app[STORAGE].dirty_buckets is not None:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the app's housekeeping did not run its first cycle within 10 s")


def ingest_url(server: TestServer) -> str:
    return str(server.make_url(INGEST_PATH))


def gzip_json_headers(token: str, batch_type: str = "sites") -> dict[str, str]:
    """The headers of a gzip JSON batch of `batch_type` from the customer holding `token`."""
    return {
        "X-Customer-Token": token,
        "X-Batch-Type": batch_type,
        "Content-Type": "application/json",
        "Content-Encoding": "gzip",
    }


def central_count(central_dsn: str, table: str = "power_measurements") -> int:
    return int(scalar(central_dsn, f"SELECT count(*) FROM fleet.{table}"))


@pytest.fixture
def customer_token(central_db: str) -> str:
    """The push token of customer DEV0001."""
    return add_customer(central_db, "DEV0001", "Development customer")


@pytest.fixture
def other_token(central_db: str) -> str:
    """The push token of a second customer, DEV0002."""
    return add_customer(central_db, "DEV0002")


@pytest.fixture
def post_batch(ingestd_client: TestClient[Any, Any]) -> PostBatch:
    """POST a batch the way the pusher does (gzip JSON), with overridable headers."""

    async def post(
        token: str | None,
        batch_type: str,
        items: list[Any] | None = None,
        *,
        body: bytes | None = None,
        gzip: bool = True,
        headers: dict[str, str] | None = None,
    ) -> ClientResponse:
        all_headers = {"Content-Type": "application/json", "X-Batch-Type": batch_type}
        if gzip:
            all_headers["Content-Encoding"] = "gzip"
        if token is not None:
            all_headers["X-Customer-Token"] = token
        all_headers.update(headers or {})
        data = body if body is not None else encode(items or [], gzip=gzip)
        return await ingestd_client.post(INGEST_PATH, data=data, headers=all_headers)

    return post


class ThreadedIngestd:
    """A real ingestd serving on a loopback port from a thread of its own, for synchronous tests
    (property-based tests drive it with plain HTTP)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, name="ingestd", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=30)

    async def _start(self) -> None:
        self._runner = web.AppRunner(create_app(self.settings), **SERVER_OPTIONS)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    @staticmethod
    async def _cancel_leftovers() -> None:
        current = asyncio.current_task()
        leftovers = [t for t in asyncio.all_tasks() if t is not current]
        for task in leftovers:
            task.cancel()
        await asyncio.gather(*leftovers, return_exceptions=True)

    def call(self, coro: Any) -> Any:
        """Run a coroutine on the server's loop (e.g. a housekeeping cycle) and return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=60)

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(timeout=30)
        # Connections still open (slow clients) leave handler tasks behind: end them here, so the
        # loop does not close under them.
        asyncio.run_coroutine_threadsafe(self._cancel_leftovers(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def post(self, token: str, batch_type: str, items: list[Any]) -> tuple[int, dict[str, Any]]:
        headers = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
        return self.post_body(token, batch_type, encode(items), headers)

    def post_body(
        self, token: str, batch_type: str, body: bytes, headers: dict[str, str]
    ) -> tuple[int, dict[str, Any]]:
        """POST a body as it is, with these content headers."""
        request = urllib.request.Request(  # noqa: S310 - loopback URL of this test's own server
            self.url + INGEST_PATH,
            data=body,
            method="POST",
            headers={"X-Customer-Token": token, "X-Batch-Type": batch_type, **headers},
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as resp:  # noqa: S310
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")


@pytest.fixture
def threaded_ingestd(ingestd_settings: Settings) -> Iterator[ThreadedIngestd]:
    """ingestd on its own thread and loop."""
    server = ThreadedIngestd(ingestd_settings)
    server.start()
    yield server
    server.stop()


async def pooled_client(aiohttp_client: Any, settings: Settings) -> TestClient[Any, Any]:
    """A real ingestd whose pool holds 4 connections (a long read finds one idle to split its
    work over), PL/pgSQL function calls counted by PostgreSQL (`function_calls`)."""
    async with await psycopg.AsyncConnection.connect(settings.database_url, autocommit=True) as c:
        await c.execute("""DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET track_functions = pl',
                                                       current_database()); END $$""")
    server = TestServer(create_app(replace(settings, pool_min_size=4, pool_max_size=4)))
    await server.start_server(**SERVER_OPTIONS)
    client: TestClient[Any, Any] = await aiohttp_client(server)
    return client


async def function_calls(dsn: str, name: str, at_least: int) -> int:
    """Calls of the PL/pgSQL function fleet.`name` counted so far (`pooled_client`), waiting
    (up to ~15 s) until there are `at_least`: a backend reports its counts once idle."""
    query = """SELECT coalesce(sum(calls), 0)::int FROM pg_stat_user_functions
               WHERE schemaname = 'fleet' AND funcname = %s"""
    calls = 0
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        for _ in range(60):
            cur = await conn.execute(query, (name,))
            row = await cur.fetchone()
            calls = int(row[0]) if row else 0
            if calls >= at_least:
                break
            await asyncio.sleep(0.25)
    return calls
