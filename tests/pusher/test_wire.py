"""What the pusher puts on the wire: the columnar encoding when ingestd takes it, gzip JSON against
an older ingestd, full sets only when they change, one lean kept-alive connection."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

import psycopg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from fleetcore import MEASUREMENT_VALUE_FIELDS
from fleetcore.protocol import COLUMNAR_MEDIA_TYPE
from ingestd.app import SERVER_OPTIONS, create_app
from ingestd.settings import Settings as IngestdSettings
from pusher.settings import Settings

from tests.fix_customer import BASE_TIME, seed_inventory, seed_measurements
from tests.fix_ingestd import central_count, ingest_url
from tests.fix_pg import scalar, wait_for
from tests.fix_pusher import running_pusher

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Request:
    batch_type: str
    content_type: str
    encoding: str | None
    header_names: set[str]
    client_port: int


@dataclass
class RecordingIngestd:
    """A real ingestd that records every request; `old=True` makes it answer as ingestd did
    before the columnar encoding: no Accept-Post / Accept-Encoding, 415 for anything not JSON."""

    settings: IngestdSettings
    old: bool = False
    refuse_columnar: bool = False
    requests: list[Request] = field(default_factory=list)
    server: TestServer | None = None

    async def start(self) -> None:
        app = create_app(self.settings)

        @web.middleware
        async def record(request: web.Request, handler: Handler) -> web.StreamResponse:
            peer = request.transport.get_extra_info("peername") if request.transport else None
            self.requests.append(
                Request(
                    request.headers.get("X-Batch-Type", ""),
                    request.content_type,
                    request.headers.get("Content-Encoding"),
                    {k.lower() for k in request.headers},
                    peer[1] if peer else 0,
                )
            )
            refused = request.content_type != "application/json"
            if (self.old or self.refuse_columnar) and refused:
                return web.json_response(
                    {"error": "unsupported_media_type", "detail": "Content-Type must be JSON"},
                    status=415,
                )
            return await handler(request)

        async def forget_accepts(request: web.Request, response: web.StreamResponse) -> None:
            if self.old:
                response.headers.popall("Accept-Post", None)
                response.headers.popall("Accept-Encoding", None)

        app.middlewares.append(record)
        app.on_response_prepare.append(forget_accepts)
        self.server = TestServer(app, host="127.0.0.1")
        await self.server.start_server(**SERVER_OPTIONS)

    def of(self, batch_type: str) -> list[Request]:
        return [r for r in self.requests if r.batch_type == batch_type]


@pytest.fixture
async def recording(ingestd_settings: IngestdSettings) -> AsyncIterator[RecordingIngestd]:
    front = RecordingIngestd(ingestd_settings)
    await front.start()
    try:
        yield front
    finally:
        assert front.server is not None
        await front.server.close()


def towards(settings: Settings, front: RecordingIngestd, **changes: Any) -> Settings:
    assert front.server is not None
    return replace(settings, ingest_url=ingest_url(front.server), **changes)


async def test_columnar_once_ingestd_says_so_over_one_lean_connection(
    pusher_settings: Settings, recording: RecordingIngestd, customer_db: str, central_db: str
) -> None:
    """The first answers (sites, devices) list the columnar encoding, so every measurement
    batch goes columnar; all requests share one connection and carry no User-Agent, Accept or
    Accept-Encoding header; a restarted pusher sends columnar from its first batch."""
    seed_inventory(customer_db)
    rows = seed_measurements(customer_db, stop=400)
    async with running_pusher(towards(pusher_settings, recording)):
        await wait_for(lambda: central_count(central_db) == rows, what="all rows")
        more = seed_measurements(customer_db, start=400, stop=410)
        await wait_for(lambda: central_count(central_db) == rows + more, what="the next tick")
    batches = recording.of("measurements")
    assert batches and all(r.content_type == COLUMNAR_MEDIA_TYPE for r in batches)
    assert any(r.encoding == "zstd" for r in batches)
    assert len({r.client_port for r in recording.requests}) == 1
    for r in recording.requests:
        assert not r.header_names & {"accept", "accept-encoding"}
    assert not any("user-agent" in r.header_names for r in batches)
    # Restarted, with unchanged sets (nothing sent before the first batch): columnar at once.
    before = len(recording.requests)
    total = rows + more + seed_measurements(customer_db, start=410, stop=900)
    async with running_pusher(towards(pusher_settings, recording)):
        await wait_for(lambda: central_count(central_db) == total, what="after a restart")
    again = [r for r in recording.requests[before:] if r.batch_type]  # health reports aside
    assert again and {r.content_type for r in again} == {COLUMNAR_MEDIA_TYPE}


async def test_older_ingestd_gets_gzip_json_without_any_setting(
    pusher_settings: Settings, ingestd_settings: IngestdSettings, customer_db: str, central_db: str
) -> None:
    """Against an ingestd that does not list the columnar encoding, the pusher sends gzip JSON
    and never tries columnar."""
    old = RecordingIngestd(ingestd_settings, old=True)
    await old.start()
    try:
        seed_inventory(customer_db)
        rows = seed_measurements(customer_db, stop=300)
        async with running_pusher(towards(pusher_settings, old)):
            await wait_for(lambda: central_count(central_db) == rows, what="all rows")
    finally:
        assert old.server is not None
        await old.server.close()
    assert {r.content_type for r in old.requests} == {"application/json"}


async def test_a_refused_columnar_batch_is_sent_again_as_json_at_once(
    pusher_settings: Settings, ingestd_settings: IngestdSettings, customer_db: str, central_db: str
) -> None:
    """An ingestd that lists the columnar encoding but answers 415 to it (a replica of the older
    version behind the same address): the same rows go again as gzip JSON, none is lost, and
    no failure is recorded."""
    mixed = RecordingIngestd(ingestd_settings, refuse_columnar=True)
    await mixed.start()
    try:
        seed_inventory(customer_db)
        rows = seed_measurements(customer_db, stop=300)
        async with running_pusher(towards(pusher_settings, mixed)):
            await wait_for(lambda: central_count(central_db) == rows, what="all rows")
    finally:
        assert mixed.server is not None
        await mixed.server.close()
    kinds = [r.content_type for r in mixed.of("measurements")]
    assert COLUMNAR_MEDIA_TYPE in kinds and "application/json" in kinds
    failures = scalar(
        customer_db,
        "SELECT consecutive_failures FROM app.fleet_push_state WHERE resource = 'measurements'",
    )
    assert failures == 0


async def test_full_sets_only_when_changed_or_due(
    pusher_settings: Settings, recording: RecordingIngestd, customer_db: str, central_db: str
) -> None:
    """Ticks go by without sites or devices on the wire until a device changes (its set goes,
    the sites' does not), or until PUSHER_FULL_SET_INTERVAL_S has passed; a restarted pusher
    remembers what ingestd accepted."""
    seed_inventory(customer_db)
    settings = towards(pusher_settings, recording, push_interval_s=0.05, full_set_interval_s=3600)
    async with running_pusher(settings):
        await wait_for(lambda: len(recording.of("devices")) == 1, what="the first devices set")
        await asyncio.sleep(1.0)  # ~20 ticks
        assert (len(recording.of("sites")), len(recording.of("devices"))) == (1, 1)
        with psycopg.connect(customer_db) as conn:
            conn.execute("UPDATE monitoring.devices SET name = 'Renamed' WHERE id = 1")
        await wait_for(lambda: len(recording.of("devices")) == 2, what="the changed set")
        assert len(recording.of("sites")) == 1
    assert scalar(central_db, "SELECT name FROM fleet.devices WHERE id = 1") == "Renamed"
    async with running_pusher(settings):
        await asyncio.sleep(0.5)
    assert (len(recording.of("sites")), len(recording.of("devices"))) == (1, 2)
    async with running_pusher(replace(settings, full_set_interval_s=0.3)):
        await wait_for(lambda: len(recording.of("sites")) >= 3, what="sets sent again when due")


async def test_rows_arrive_with_their_bits_either_way(
    pusher_settings: Settings,
    recording: RecordingIngestd,
    customer_db: str,
    central_db: str,
    other_token: str,
) -> None:
    """Extreme values in the meter database (-0.0, subnormals, 1e15, NULLs in some rows, a NaN
    that is refused) reach the central table with the same bits through the columnar pusher
    and through a JSON pusher (another customer), and the NaN row is dead-lettered by both."""
    seed_inventory(customer_db)
    values = ["-0.0", "5e-324", "1e15", "-1e15", "2.2250738585072014e-308", "0.1", "NULL"]
    with psycopg.connect(customer_db) as conn:
        for i, value in enumerate(values * 3):
            conn.execute(
                "INSERT INTO monitoring.power_measurements (device_id, time, v1, thd_i) "
                f"VALUES (%s, %s + make_interval(secs => %s), {value}, %s)",
                (i % 4 + 1, BASE_TIME, i, None if i % 2 else 1.5),
            )
        conn.execute(
            "INSERT INTO monitoring.power_measurements (device_id, time, v1) "
            "VALUES (1, %s - interval '1 minute', 'NaN')",
            (BASE_TIME,),
        )
    total = len(values) * 3
    async with running_pusher(towards(pusher_settings, recording)):
        await wait_for(lambda: central_count(central_db) == total, what="columnar rows")
    with psycopg.connect(customer_db) as conn:
        conn.execute("DELETE FROM app.fleet_push_state")  # the same rows again, from the start
    async with running_pusher(replace(pusher_settings, token=other_token, wire_format="json")):
        await wait_for(lambda: central_count(central_db) == 2 * total, what="JSON rows")
    query = (
        "SELECT device_id, time, received_at, "
        + ", ".join(f"float8send({n})" for n in MEASUREMENT_VALUE_FIELDS)
        + " FROM fleet.power_measurements WHERE customer_id = "
        "(SELECT id FROM fleet.customers WHERE code = %s) ORDER BY device_id, time"
    )
    with psycopg.connect(central_db) as conn:
        columnar = conn.execute(query, ("DEV0001",)).fetchall()
        as_json = conn.execute(query, ("DEV0002",)).fetchall()
        dead = conn.execute("SELECT count(*) FROM fleet.rejected_rows").fetchone()
    local_query = (
        query.split(" FROM")[0]
        + " FROM monitoring.power_measurements WHERE v1 <> 'NaN' OR v1 IS NULL"
        + " ORDER BY device_id, time"
    )
    with psycopg.connect(customer_db) as conn:
        local = conn.execute(local_query).fetchall()
    assert columnar == as_json == local
    assert dead == (2,)
