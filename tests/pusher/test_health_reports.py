"""The pusher's health reports: what a report carries, how rarely it goes in steady state, and
that an ingestd which does not take reports (an older one) sees at most one probe and nothing else
changes."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import aiohttp
import psycopg
from aiohttp import web
from aiohttp.test_utils import TestServer
from fleetcore.protocol import HEALTH_HEADER, HEALTH_PATH, INGEST_PATH
from pusher.settings import Settings

from tests.fix_customer import seed_inventory, seed_measurements
from tests.fix_ingestd import central_count, ingest_url
from tests.fix_pg import scalar, wait_for
from tests.fix_pusher import running_pusher


def _gateway(central: str) -> dict[str, Any]:
    with psycopg.connect(central, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute("SELECT reports, version, wire_format, db_bytes, disk_free_bytes, "
                    "clock_offset_s, quarantined_rows, heartbeat_s, sent_bytes FROM fleet.gateways")  # fmt: skip
        row = cur.fetchone()
        assert row is not None and cur.description is not None
        return dict(zip([c.name for c in cur.description], row, strict=True))


async def test_reports_carry_the_gateway_and_stay_rare(
    pusher_settings: Settings, customer_db: str, central_db: str
) -> None:
    """The first answer advertises reports and one arrives at once (version, columnar, database
    size, free disk, a clock offset near 0, no quarantine); while batches flow every tick and
    nothing changes, further ticks send no more reports (the batches show the gateway alive)."""
    seed_inventory(customer_db)
    settings = replace(pusher_settings, push_interval_s=0.1, health_interval_s=5.0)
    async with running_pusher(settings):
        await wait_for(lambda: scalar(central_db, "SELECT count(*) FROM fleet.gateways") == 1,
                       what="the first report")  # fmt: skip
        for tick in range(20):  # a sample per device every tick, each shipped
            seed_measurements(customer_db, start=tick, stop=tick + 1)

            def arrived(expected: int = 4 * (tick + 1)) -> bool:
                return central_count(central_db) == expected

            await wait_for(arrived, what="rows")
        gateway = _gateway(central_db)
    assert gateway["reports"] <= 3, gateway  # the first, maybe the wire format's switch
    assert gateway["wire_format"] == "columnar"
    assert gateway["db_bytes"] > 1_000_000 and gateway["disk_free_bytes"] > 0
    assert abs(gateway["clock_offset_s"]) < 5 and gateway["quarantined_rows"] == 0
    assert gateway["heartbeat_s"] == 5.0 and gateway["sent_bytes"] > 0


async def test_an_ingestd_without_reports_sees_one_probe(
    pusher_settings: Settings, customer_db: str, central_db: str, ingestd_server: TestServer
) -> None:
    """Behind an ingestd that does not take reports (no X-Health-Report, 404 on the path), rows
    are shipped as ever and the heartbeat probes once; no report is stored."""
    seen: list[str] = []
    session = aiohttp.ClientSession(auto_decompress=False)

    async def old_ingestd(request: web.Request) -> web.StreamResponse:
        seen.append(request.path)
        if request.path != INGEST_PATH:
            return web.json_response({"error": "not_found"}, status=404)
        headers = {k: v for k, v in request.headers.items() if k.lower() != "host"}
        async with session.post(
            ingest_url(ingestd_server), data=await request.read(), headers=headers
        ) as resp:
            out = {k: v for k, v in resp.headers.items()
                   if k.lower() not in ("content-length", "content-type", HEALTH_HEADER.lower())}  # fmt: skip
            return web.Response(body=await resp.read(), status=resp.status,
                                content_type="application/json", headers=out)  # fmt: skip

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", old_ingestd)
    front = TestServer(app, host="127.0.0.1")
    await front.start_server(auto_decompress=False)
    try:
        seed_inventory(customer_db)
        settings = replace(
            pusher_settings,
            ingest_url=ingest_url(front),
            push_interval_s=0.1,
            health_interval_s=0.3,
        )
        async with running_pusher(settings):
            seed_measurements(customer_db, stop=10)
            await wait_for(lambda: central_count(central_db) == 40, what="rows")
            await asyncio.sleep(1.5)  # five heartbeats' worth of idle time
            seed_measurements(customer_db, start=10, stop=20)
            await wait_for(lambda: central_count(central_db) == 80, what="more rows")
    finally:
        await front.close()
        await session.close()
    assert seen.count(HEALTH_PATH) <= 1, seen
    assert scalar(central_db, "SELECT count(*) FROM fleet.gateways") == 0
