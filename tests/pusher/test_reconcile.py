"""Reconciliation, end to end: a real pusher, a real ingestd, rows lost centrally come back.

Losses are made the way they happen: rows and whole hours deleted from the central table behind
ingestd's back (a restore, a dropped chunk, a wrong retention job) — on TimescaleDB after
compressing the chunks, so the deletes and the digests go through compressed data. Passes run
on a short cadence here; the product's default is hourly. `test_reconcile_storage.py` runs the
repair on both storage paths.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from datetime import datetime
from typing import Any

import psycopg
import pytest
from aiohttp.test_utils import TestServer
from ingestd.keys import IDENTITY
from pusher.settings import Settings

from tests.fix_customer import seed_inventory, seed_measurements
from tests.fix_ingestd import central_count
from tests.fix_pg import scalar, wait_for
from tests.fix_pusher import (
    metric,
    pusher_env,
    running_pusher,
    scrape,
    start_pusher_process,
    with_metrics,
)

KEYS = "SELECT device_id, time FROM {table} ORDER BY 1, 2"


def keys(dsn: str, table: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(KEYS.format(table=table)).fetchall()


def lose_rows(central_db: str) -> int:
    """Delete central rows behind ingestd's back: every 97th row and the first 60 minutes of
    device 2 (compressed first on TimescaleDB); return how many went."""
    with psycopg.connect(central_db, autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'").fetchone():
            conn.execute(
                "SELECT compress_chunk(c, if_not_compressed => true) "
                "FROM show_chunks('fleet.power_measurements_scaled') c"
            )
        first = conn.execute("SELECT min(time) FROM fleet.power_measurements").fetchone()
        assert first is not None
        hour = conn.execute(
            "DELETE FROM fleet.power_measurements WHERE device_id = 2 "
            "AND time >= %s AND time < %s + interval '1 hour'",
            (first[0], first[0]),
        ).rowcount
        scattered = conn.execute(
            "DELETE FROM fleet.power_measurements WHERE (device_id, time) IN ("
            "SELECT device_id, time FROM (SELECT device_id, time, "
            "row_number() OVER (ORDER BY device_id, time) AS n FROM fleet.power_measurements) r "
            "WHERE mod(n, 97) = 0)"
        ).rowcount
    return hour + scattered


def pass_settings(settings: Settings, interval_s: float = 0.5) -> Settings:
    return replace(settings, reconcile_interval_s=interval_s, reconcile_settle_s=0.2)


async def test_reconcile_command_reports_and_repairs(
    pusher_settings: Settings, customer_db: str, central_db: str, ingestd_server: TestServer
) -> None:
    """`pusher reconcile` says in one line that nothing differed (exit 0), re-sends what the
    centre lost and says how much (exit 0), shows the pass in `pusher status`, and exits 1
    naming the cause when ingestd cannot be reached."""
    seed_inventory(customer_db, devices=2)
    total = seed_measurements(customer_db, devices=2, stop=1800)
    async with running_pusher(replace(pusher_settings, reconcile_interval_s=0)):
        await wait_for(lambda: central_count(central_db) == total, what="the first push")
    env = pusher_env(pusher_settings)

    async def reconcile(environment: dict[str, str]) -> tuple[int, str]:
        proc = await start_pusher_process(environment, "reconcile", capture=True)
        out, _ = await proc.communicate()
        assert proc.returncode is not None
        return proc.returncode, out.decode()

    code, out = await reconcile(env)
    assert code == 0 and out.startswith("in_sync: compared 1 cells (2 devices"), out
    lost = lose_rows(central_db)
    code, out = await reconcile(env)
    assert code == 0 and out.startswith("repaired:"), out
    assert f"{lost} stored again" in out
    assert central_count(central_db) == total
    status = await start_pusher_process(env, "status", capture=True)
    report = json.loads((await status.communicate())[0])
    assert report["reconciliation"]["last_result"] == "repaired"
    assert report["reconciliation"]["rows_restored"] == lost
    code, out = await reconcile(pusher_env(pusher_settings, PUSHER_INGEST_URL="http://127.0.0.1:9"))
    assert code == 1 and out.startswith("FAIL reconciliation:"), out
    assert "Traceback" not in out


async def test_rows_deleted_on_the_gateway_stay_central_and_cost_nothing_later(
    pusher_settings: Settings, customer_db: str, central_db: str
) -> None:
    """Rows deleted on the gateway after delivery are kept centrally (not repaired away); the
    pass that finds them remembers the difference and the passes after it re-send nothing."""
    seed_inventory(customer_db, devices=2)
    total = seed_measurements(customer_db, devices=2, stop=1200)
    settings = with_metrics(pass_settings(pusher_settings, interval_s=0.3))
    async with running_pusher(settings):
        await wait_for(lambda: central_count(central_db) == total, what="the first push")
        with psycopg.connect(customer_db) as conn:
            conn.execute(
                "DELETE FROM monitoring.power_measurements WHERE device_id = 1 "
                "AND time < (SELECT min(time) + interval '5 minutes' "
                "FROM monitoring.power_measurements)"
            )
        await wait_for(
            lambda: (
                (scalar(customer_db, "SELECT count(*) FROM app.fleet_reconcile_known") or 0) > 0
            ),
            what="the known difference",
        )
        passes = metric(await scrape(settings), "fleet_pusher_reconcile_passes_total")
        await wait_for(
            lambda: (
                (scalar(customer_db, "SELECT passes FROM app.fleet_reconcile_state") or 0)
                >= passes + 3
            ),
            what="three more passes",
        )
        text = await scrape(settings)
    assert central_count(central_db) == total
    assert metric(text, "fleet_pusher_reconcile_rows_restored_total") == 0
    resent_after = scalar(customer_db, "SELECT last_rows_resent FROM app.fleet_reconcile_state")
    assert resent_after == 0
    assert metric(text, "fleet_pusher_reconcile_known_differences") >= 1


async def test_a_changed_central_database_brings_the_next_pass_forward(
    pusher_settings: Settings, customer_db: str, central_db: str, ingestd_server: TestServer
) -> None:
    """With an hourly cadence, a pass follows within twice the settle time once ingestd's answers
    name another central database, and repairs what that database lacks."""
    seed_inventory(customer_db, devices=2)
    total = seed_measurements(customer_db, devices=2, stop=1200)
    settings = with_metrics(pass_settings(pusher_settings, interval_s=3600))
    async with running_pusher(settings):
        await wait_for(lambda: central_count(central_db) == total, what="the first push")
        await wait_for(
            lambda: scalar(customer_db, "SELECT passes FROM app.fleet_reconcile_state") == 1,
            what="the pass at start",
        )
        lost = await asyncio.to_thread(lose_rows, central_db)  # ingestd runs on this loop
        ingestd_server.app[IDENTITY].value = "1.2.3"  # as after a failover or a restore
        seed_measurements(customer_db, devices=2, start=1200, stop=1210)  # answers carry it
        await wait_for(
            lambda: (
                scalar(customer_db, "SELECT rows_restored FROM app.fleet_reconcile_state") == lost
            ),
            timeout_s=60,
            what="the repair",
        )
        text = await scrape(settings)
    assert central_count(central_db) == total + 20
    assert metric(text, "fleet_pusher_central_identity_changes_total") == 1
    assert metric(text, "fleet_pusher_reconcile_rows_restored_total") == lost


def _lose_a_few(central_db: str, cells: list[tuple[int, datetime]]) -> int:
    """Delete three central rows of the first of `cells` (device, hour); how many went."""
    device, hour = cells[0]
    with psycopg.connect(central_db, autocommit=True) as conn:
        return conn.execute(
            "DELETE FROM fleet.power_measurements WHERE (device_id, time) IN ("
            "SELECT device_id, time FROM fleet.power_measurements WHERE device_id = %s "
            "AND time >= %s AND time < %s + interval '1 hour' ORDER BY time LIMIT 3)",
            (device, hour, hour),
        ).rowcount


async def test_a_loss_racing_a_repair_is_repaired_by_the_next_pass(
    pusher_settings: Settings,
    customer_db: str,
    central_db: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Rows lost centrally while a pass re-sends (after its repair batches, before it compares
    again) are not taken for a known difference, which would never be repaired: the next pass
    stores them again, and no known difference is left."""
    from pusher.reconcile import passes

    seed_inventory(customer_db, devices=2)
    total = seed_measurements(customer_db, devices=2, stop=1800)
    real = passes._resend
    raced: list[int] = []

    async def resend_then_lose(run: Any, cells: list[tuple[int, datetime]], *rest: Any) -> None:
        await real(run, cells, *rest)
        if not raced:
            raced.append(await asyncio.to_thread(_lose_a_few, central_db, cells))

    monkeypatch.setattr(passes, "_resend", resend_then_lose)
    settings = pass_settings(pusher_settings, interval_s=0.3)
    async with running_pusher(settings):
        await wait_for(lambda: central_count(central_db) == total, what="the first push")
        lost = await asyncio.to_thread(lose_rows, central_db)
        await wait_for(
            lambda: (
                bool(raced)
                and scalar(customer_db, "SELECT rows_restored FROM app.fleet_reconcile_state")
                == lost + raced[0]
            ),
            timeout_s=60,
            what="the loss and the racing loss repaired",
        )
    assert raced == [3]
    assert keys(central_db, "fleet.power_measurements") == keys(
        customer_db, "monitoring.power_measurements"
    )
    assert scalar(customer_db, "SELECT count(*) FROM app.fleet_reconcile_known") == 0
