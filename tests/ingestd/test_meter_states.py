"""Meter states derived in the centre: ok, silent, frozen, implausible, and unknown while the
customer's gateway is silent — in the completeness report, the customer's gateways and the fleet view."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from aiohttp.test_utils import TestClient
from fleetcore import HealthReport, encode_report
from fleetcore.protocol import HEALTH_PATH
from ingestd.fleetstate import HealthPolicy
from ingestd.settings import Settings

from tests.fix_ingestd import PostBatch
from tests.openapi_check import assert_matches
from tests.samples import device, measurement, site

ADMIN = "admin-" + "y" * 40
AUTH = {"Authorization": f"Bearer {ADMIN}"}
MINUTE = timedelta(minutes=1)


@pytest.fixture
def ingestd_settings(ingestd_settings: Settings) -> Settings:
    """Read API on, fleet states derived every 0.2 s, meters rated 500 kW."""
    return replace(
        ingestd_settings,
        admin_token=ADMIN,
        health=HealthPolicy(state_interval_s=0.2, meter_rated_kw=500.0),
    )


def samples(
    device_id: int, end: datetime, minutes: int, kw: float, kwh_per_minute: float, jump_at: int = -1
) -> list[dict[str, Any]]:
    """A sample a minute for `minutes` minutes up to `end`; the register grows `kwh_per_minute`
    (and jumps by 10,000 kWh at sample `jump_at`)."""
    rows = []
    for i in range(minutes):
        register = 1000.0 + i * kwh_per_minute + (10_000.0 if 0 <= jump_at <= i else 0.0)
        when = end - (minutes - 1 - i) * MINUTE
        rows.append(measurement(device_id, when, p_total=kw, energy_imp_kwh=register))
    return rows


def _silence_gateways(central_db: str) -> None:
    with psycopg.connect(central_db, autocommit=True) as conn:
        conn.execute(
            "UPDATE fleet.gateways SET last_report_at = now() - interval '1 hour', "
            "last_contact_at = now() - interval '1 hour'"
        )


async def _report(client: TestClient[Any, Any], token: str) -> None:
    body = encode_report(
        HealthReport(
            version="1.0.0",
            wire_format="columnar",
            started_at=int(time.time()),
            push_interval_s=1.0,
            heartbeat_s=60.0,
        )
    )
    resp = await client.post(
        HEALTH_PATH,
        data=body,
        headers={"X-Customer-Token": token, "Content-Type": "application/json"},
    )
    assert resp.status == 200


async def test_meter_states_everywhere(
    ingestd_client: TestClient[Any, Any],
    post_batch: PostBatch,
    customer_token: str,
    central_db: str,
) -> None:
    """A meter with power flowing and its register counting is ok; one whose register stood still
    for 90 minutes at 5 kW is frozen; one without a sample for an hour (usual: a minute) is silent;
    one whose register jumped 10,000 kWh in a minute (rated 500 kW) is implausible. The
    completeness report, the customer's gateways and the fleet view say so."""
    now = datetime.now(UTC).replace(microsecond=0)
    assert (await post_batch(customer_token, "sites", [site(1)])).status == 200
    devices = [device(n) for n in (1, 2, 3, 4)]
    assert (await post_batch(customer_token, "devices", devices)).status == 200
    rows = (
        samples(1, now, 90, 5.0, 5.0 / 60)
        + samples(2, now, 90, 5.0, 0.0)
        + samples(3, now - timedelta(hours=1), 90, 5.0, 5.0 / 60)
        + samples(4, now, 90, 5.0, 5.0 / 60, jump_at=45)
    )
    assert (await post_batch(customer_token, "measurements", rows)).status == 200
    await _report(ingestd_client, customer_token)
    expected = {1: "ok", 2: "frozen", 3: "silent", 4: "implausible"}

    resp = await ingestd_client.get("/api/fleet/customers/DEV0001/completeness", headers=AUTH)
    body = await resp.json()
    assert_matches("/api/fleet/customers/{code}/completeness", "get", 200, body)
    assert {d["device_id"]: d["state"] for d in body["devices"]} == expected

    resp = await ingestd_client.get("/api/fleet/customers/DEV0001/gateways", headers=AUTH)
    body = await resp.json()
    assert_matches("/api/fleet/customers/{code}/gateways", "get", 200, body)
    assert {m["device_id"]: m["state"] for m in body["meters"]} == expected
    assert [g["states"] for g in body["gateways"]] == [["ok"]]

    deadline = time.monotonic() + 20
    shown: dict[int, str] = {}
    while time.monotonic() < deadline and shown != {2: "frozen", 3: "silent", 4: "implausible"}:
        resp = await ingestd_client.get("/api/fleet/gateways", headers=AUTH)
        body = await resp.json()
        (gateway,) = body["gateways"]
        shown = {m["device_id"]: m["state"] for m in gateway["meters_not_ok"]}
        await asyncio.sleep(0.1)
    assert shown == {2: "frozen", 3: "silent", 4: "implausible"}
    metrics = await (await ingestd_client.get("/metrics")).text()
    assert 'fleet_meters{state="frozen"} 1.0' in metrics

    await asyncio.to_thread(_silence_gateways, central_db)  # off the loop the app runs on
    resp = await ingestd_client.get("/api/fleet/customers/DEV0001/gateways", headers=AUTH)
    body = await resp.json()
    assert {m["state"] for m in body["meters"]} == {"unknown"}
    assert [g["states"] for g in body["gateways"]] == [["silent"]]


def test_a_long_state_round_spaces_out_the_next() -> None:
    """A fleet-state round that takes longer than a ninth of the interval pushes the next one out
    to nine times its duration, so at fleet scale the derivation takes at most ~10 % of a database
    connection's time instead of running back to back."""
    from ingestd.fleetwatch import next_round_in

    assert next_round_in(30.0, 0.5) == 30.0
    assert next_round_in(30.0, 60.0) == 540.0


def test_meter_slices_are_sized_to_be_read_in_a_quarter_second() -> None:
    """A slice whose meters took longer than SLICE_TARGET_S to read makes the next one smaller
    (at most a quarter at once), a quicker one larger (at most double), never under one customer
    nor over MAX_SLICE_CUSTOMERS, and a slice without meters changes nothing: a pool connection
    and a database core are never held for long."""
    from ingestd.fleetwatch import MAX_SLICE_CUSTOMERS, SLICE_TARGET_S, MeterSweep

    sweep = MeterSweep(customers=200)
    sweep.measured(12.0, 5500)  # 200 customers' meters read in 12 s
    assert sweep.customers == 50
    sweep.measured(1.0, 1400)
    assert sweep.customers == 12
    sweep.measured(SLICE_TARGET_S / 2, 330)
    assert sweep.customers == 24
    sweep.measured(SLICE_TARGET_S, 660)
    assert sweep.customers == 24
    sweep.measured(0.0, 0)  # customers without meters yet
    assert sweep.customers == 24
    for _ in range(20):
        sweep.measured(0.0, 1)
    assert sweep.customers == MAX_SLICE_CUSTOMERS
    for _ in range(20):
        sweep.measured(60.0, 1)
    assert sweep.customers == 1


async def test_meter_states_sweep_the_customers_slice_by_slice(central_db: str) -> None:
    """Each fleet-state round classifies the meters of the next slice of customers only, so a
    round stays short however large the fleet; the rounds go round every customer, then start
    over from the first; a slice between two gateways' rounds reads no gateway."""
    from ingestd.fleetwatch import MeterSweep, derive_fleet_states

    with psycopg.connect(central_db, autocommit=True) as conn:
        ids = [
            row[0]
            for row in conn.execute(
                "INSERT INTO fleet.customers (code, name) "
                "SELECT 'SWEEP' || g, 'Sweep ' || g FROM generate_series(1, 3) AS g RETURNING id"
            ).fetchall()
        ]
        conn.execute(
            "INSERT INTO fleet.devices (customer_id, id, site_id, serial_number, model, updated_at) "
            "SELECT c, 1, 1, 'SN' || c, 'Acuvim', now() FROM unnest(%s::bigint[]) AS c",
            (ids,),
        )
    sweep = MeterSweep(customers=2, target_s=None)
    classified: list[list[int]] = []
    async with await psycopg.AsyncConnection.connect(central_db, autocommit=True) as conn:
        for _ in range(3):
            before = await (await conn.execute("SELECT now()")).fetchone()
            assert await derive_fleet_states(conn, HealthPolicy(), 300.0, sweep) is not None
            cur = await conn.execute(
                "SELECT customer_id FROM fleet.device_states WHERE checked_at >= %s ORDER BY 1",
                (before[0] if before else None,),
            )
            classified.append([row[0] for row in await cur.fetchall()])
    assert classified == [sorted(ids)[:2], sorted(ids)[2:], sorted(ids)[:2]]
    async with await psycopg.AsyncConnection.connect(central_db, autocommit=True) as conn:
        between = await derive_fleet_states(conn, HealthPolicy(), 300.0, sweep, gateways=False)
    assert between is not None and between[0] == 0  # a slice between gateways' rounds
    assert sweep.wrapped


async def test_a_round_reads_in_one_snapshot_and_writes_in_read_committed(
    central_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A round reads the meters' inputs in a read-only REPEATABLE READ transaction (a READ
    COMMITTED read of the aggregate racing its refresh on TimescaleDB can miss the latest hour:
    tests/ingestd/test_read_snapshot.py) and writes the states in a READ COMMITTED one; while
    another session holds the turn it does neither."""
    from ingestd import fleetwatch
    from ingestd.storage.locks import FLEET_STATE_LOCK

    seen: list[tuple[Any, ...]] = []
    real_read, real_write = fleetwatch.meter_rows, fleetwatch.write_device_states

    async def isolation(conn: psycopg.AsyncConnection[Any]) -> tuple[Any, ...]:
        cur = await conn.execute(
            "SELECT current_setting('transaction_isolation'), "
            "current_setting('transaction_read_only')"
        )
        return tuple(await cur.fetchone() or ())

    async def read(conn: psycopg.AsyncConnection[Any], **kw: Any) -> list[dict[str, Any]]:
        seen.append(("read", *await isolation(conn)))
        return await real_read(conn, **kw)

    async def write(conn: psycopg.AsyncConnection[Any], states: Any) -> None:
        seen.append(("write", *await isolation(conn)))
        await real_write(conn, states)

    monkeypatch.setattr(fleetwatch, "meter_rows", read)
    monkeypatch.setattr(fleetwatch, "write_device_states", write)
    async with await psycopg.AsyncConnection.connect(central_db, autocommit=True) as conn:
        assert await fleetwatch.derive_fleet_states(conn, HealthPolicy(), 300.0) is not None
        assert seen == [("read", "repeatable read", "on"), ("write", "read committed", "off")]
        async with await psycopg.AsyncConnection.connect(central_db, autocommit=True) as other:
            await other.execute("SELECT pg_advisory_lock(%s)", (FLEET_STATE_LOCK,))
            assert await fleetwatch.derive_fleet_states(conn, HealthPolicy(), 300.0) is None
    assert len(seen) == 2
