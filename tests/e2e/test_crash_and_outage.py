"""Exactly once centrally across a SIGKILL, a SIGTERM and an ingestd outage."""

from __future__ import annotations

import asyncio
import signal
import time
from dataclasses import replace

from aiohttp.test_utils import TestServer
from fleetdev.pgcluster import free_port
from ingestd.app import SERVER_OPTIONS, create_app
from ingestd.settings import Settings as IngestdSettings
from pusher.settings import Settings

from tests.fix_customer import seed_inventory, seed_measurements
from tests.fix_faults import FaultFront
from tests.fix_ingestd import central_count
from tests.fix_pg import scalar, wait_for
from tests.fix_pusher import pusher_env, running_pusher, start_pusher_process

CURSOR = "SELECT cursor FROM app.fleet_push_state WHERE resource = 'measurements'"
DUPLICATES = "SELECT coalesce(sum(duplicates), 0) FROM fleet.ingest_events"


async def test_sigkill_mid_batch_then_restart_loses_nothing(
    pusher_settings: Settings, customer_db: str, central_db: str, fault_front: FaultFront
) -> None:
    """A pusher killed with SIGKILL after ingestd stored a batch but before the answer reached
    it re-sends at most that batch on restart; every row is stored centrally exactly once."""
    seed_inventory(customer_db)
    expected = seed_measurements(customer_db, devices=4, stop=750)
    settings = replace(pusher_settings, ingest_url=fault_front.url)
    fault_front.stall_request = 3
    first = await start_pusher_process(pusher_env(settings))
    try:
        await asyncio.wait_for(fault_front.stalled.wait(), 30)
        first.kill()
        assert await asyncio.wait_for(first.wait(), 10) == -signal.SIGKILL
    finally:
        if first.returncode is None:
            first.kill()
            await first.wait()
    fault_front.release.set()
    cursor_after_kill = scalar(customer_db, CURSOR)
    assert central_count(central_db) == 3 * settings.batch_size
    second = await start_pusher_process(pusher_env(settings))
    try:
        await wait_for(lambda: central_count(central_db) == expected, what="all rows")
    finally:
        second.send_signal(signal.SIGTERM)
        await asyncio.wait_for(second.wait(), 15)
    assert second.returncode == 0
    assert scalar(customer_db, CURSOR) != cursor_after_kill
    assert scalar(central_db, DUPLICATES) == settings.batch_size, "exactly one batch re-sent"


async def test_sigterm_lets_the_in_flight_batch_finish(
    pusher_settings: Settings, customer_db: str, central_db: str, fault_front: FaultFront
) -> None:
    """SIGTERM while a batch is on the wire: the pusher waits for its answer, records the new
    cursor and exits 0; a restart sends nothing twice."""
    expected = seed_measurements(customer_db, devices=2, stop=500)
    settings = replace(pusher_settings, ingest_url=fault_front.url)
    fault_front.stall_request = 1
    proc = await start_pusher_process(pusher_env(settings))
    try:
        await asyncio.wait_for(fault_front.stalled.wait(), 30)
        proc.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.3)
        assert proc.returncode is None, "still waiting for the in-flight answer"
        fault_front.release.set()
        assert await asyncio.wait_for(proc.wait(), 10) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert scalar(customer_db, CURSOR) is not None
    async with running_pusher(settings):
        await wait_for(lambda: central_count(central_db) == expected, what="all rows")
    assert scalar(central_db, DUPLICATES) == 0


async def test_shutdown_deadline_abandons_the_batch_without_advancing(
    pusher_settings: Settings, customer_db: str, central_db: str, fault_front: FaultFront
) -> None:
    """When the in-flight answer does not come within the shutdown deadline the batch is
    abandoned and the cursor stays where it was."""
    seed_measurements(customer_db, devices=2, stop=100)
    settings = replace(pusher_settings, ingest_url=fault_front.url, shutdown_deadline_s=0.3)
    fault_front.stall_request = 1
    async with running_pusher(settings):
        await asyncio.wait_for(fault_front.stalled.wait(), 30)
        started = time.monotonic()
    assert time.monotonic() - started < 2.0
    fault_front.release.set()
    assert scalar(customer_db, CURSOR) is None


async def test_ingestd_down_for_a_while_then_back(
    pusher_settings: Settings,
    customer_db: str,
    central_db: str,
    ingestd_settings: IngestdSettings,
) -> None:
    """With ingestd unreachable at start and again mid-run, the pusher backs off and retries;
    once it is back every row arrives exactly once."""
    seed_inventory(customer_db)
    expected = seed_measurements(customer_db, devices=4, stop=300)
    port = free_port()
    settings = replace(
        pusher_settings, ingest_url=f"http://127.0.0.1:{port}/api/fleet/ingest", batch_size=200
    )

    async def serve() -> TestServer:
        server = TestServer(create_app(ingestd_settings), host="127.0.0.1", port=port)
        await server.start_server(**SERVER_OPTIONS)
        return server

    async with running_pusher(settings) as task:
        await asyncio.sleep(0.8)
        assert central_count(central_db) == 0
        server = await serve()
        await wait_for(lambda: central_count(central_db) == expected, what="first rows")
        await server.close()
        more = seed_measurements(customer_db, devices=4, start=300, stop=600)
        await asyncio.sleep(0.8)
        server = await serve()
        try:
            await wait_for(lambda: central_count(central_db) == expected + more, what="more rows")
        finally:
            await server.close()
    pusher = task.result()
    assert pusher is not None
    failures = pusher.metrics.value("fleet_pusher_failures_total", resource="measurements")
    assert failures >= 2
    assert scalar(central_db, DUPLICATES) == 0
