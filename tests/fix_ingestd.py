"""ingestd fixtures: settings on the test's central database, an in-process server, a customer."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient, TestServer
from ingestd.app import INGEST_PATH, SERVER_OPTIONS, create_app
from ingestd.customers import add_customer
from ingestd.settings import Settings

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
