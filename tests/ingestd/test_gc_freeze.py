"""ingestd's start-up objects are out of the collector's full passes (`gc.freeze` once started)."""

from __future__ import annotations

import gc
from typing import Any

from aiohttp.test_utils import TestServer
from ingestd.app import SERVER_OPTIONS, create_app
from ingestd.settings import Settings


async def test_objects_alive_once_started_are_frozen(
    aiohttp_client: Any, ingestd_settings: Settings
) -> None:
    """Once the app has started (pool open, loops running), what is alive then is frozen — a
    full collection no longer walks it — and the app serves as before; its cleanup unfreezes."""
    gc.unfreeze()  # whatever an earlier test's app froze in this process
    assert gc.get_freeze_count() == 0
    server = TestServer(create_app(ingestd_settings))
    await server.start_server(**SERVER_OPTIONS)
    client = await aiohttp_client(server)
    assert gc.get_freeze_count() > 10_000
    response = await client.get("/healthz")
    assert response.status == 200
    await client.close()  # the app's cleanup hands them back to the collector
    assert gc.get_freeze_count() == 0
