"""What holds the cursor back, and a cursor from another cluster's history."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace

import psycopg
from pusher.ops.status import collect_status
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


async def test_long_open_transaction_holds_the_cursor_and_is_reported(
    pusher_settings: Settings, customer_db: str, central_db: str, capsys: object
) -> None:
    """Rows written after a still-open writing transaction wait for it; the blocker (pid, age,
    state) is logged, shown by `pusher status` and in the metrics; once it commits everything
    ships and the metric drops to 0."""
    first = seed_measurements(customer_db, devices=2, stop=50)
    blocker = await psycopg.AsyncConnection.connect(customer_db, application_name="slow-batch-job")
    blocker_pid = blocker.info.backend_pid
    try:
        await blocker.execute(
            "INSERT INTO monitoring.power_measurements (device_id, time, v1) "
            "VALUES (99, now() - interval '1 hour', 1.0)"
        )
        later = seed_measurements(customer_db, devices=2, start=50, stop=100)
        settings = with_metrics(replace(pusher_settings, blocking_txn_warn_s=0.5))
        async with running_pusher(settings):
            await wait_for(lambda: central_count(central_db) == first, what="rows before it")
            await asyncio.sleep(1.0)
            assert central_count(central_db) == first
            report = await collect_status(customer_db, 0.5)
            blocked = await scrape(settings)
            await blocker.commit()
            await wait_for(lambda: central_count(central_db) == first + later + 1, what="the rest")
            await asyncio.sleep(0.5)
            after = await scrape(settings)
    finally:
        await blocker.close()
    held = report["blocking_transaction"]
    assert held["pid"] == blocker_pid
    assert held["application_name"] == "slow-batch-job"
    assert held["state"] == "idle in transaction"
    assert held["age_s"] >= 0.5
    measurements = report["resources"]["measurements"]
    assert measurements["backlog_rows"] == later  # its own row is not visible yet
    assert measurements["backlog_rows_shippable_now"] == 0
    assert metric(blocked, "fleet_pusher_blocking_transaction_age_seconds") >= 1.0
    assert metric(blocked, "fleet_pusher_backlog_rows") == later
    assert metric(after, "fleet_pusher_blocking_transaction_age_seconds") == 0
    captured = capsys.readouterr()  # type: ignore[attr-defined]
    out = captured.out + captured.err  # an earlier in-process CLI test may have sent logs to stderr
    assert "cursor_held_back" in out and str(held["pid"]) in out


async def test_cursor_beyond_the_server_xid_counter_is_recovered(
    pusher_settings: Settings, customer_db: str, central_db: str
) -> None:
    """After a restore into another cluster (stored cursor and row stamps far above this
    server's transaction counter) the pusher restamps the rows, restarts its cursor, and every
    row arrives centrally exactly once."""
    seed_inventory(customer_db)
    expected = seed_measurements(customer_db, devices=4, stop=200)
    far = int(scalar(customer_db, "SELECT pg_current_xact_id()::text")) + 10_000_000
    with psycopg.connect(customer_db) as conn:
        conn.execute("ALTER TABLE monitoring.power_measurements DISABLE TRIGGER fleet_push_restamp")
        conn.execute(
            "UPDATE monitoring.power_measurements SET push_xid = (%s::bigint + device_id)::text::xid8"
            " WHERE device_id <= 2",
            (far,),
        )
        conn.execute("ALTER TABLE monitoring.power_measurements ENABLE TRIGGER fleet_push_restamp")
        conn.execute(
            "INSERT INTO app.fleet_push_state (resource, cursor, batch_size) "
            "VALUES ('measurements', %s, 500)",
            (f"{far + 1}:1:2026-01-01T00:00:00+00:00",),
        )
    async with running_pusher(pusher_settings) as task:
        await wait_for(lambda: central_count(central_db) == expected, what="all rows")
        await asyncio.sleep(0.3)
    pusher = task.result()
    assert pusher is not None
    assert pusher.metrics.value("fleet_pusher_cursor_resets_total") == 1
    assert pusher.metrics.value("fleet_pusher_restamped_rows_total") == expected // 2
    assert central_count(central_db) == expected
    future = scalar(
        customer_db,
        "SELECT count(*) FROM monitoring.power_measurements WHERE push_xid >= %s::text::xid8",
        (str(far),),
    )
    assert future == 0


async def test_status_command_reports_backlog_and_lag(
    pusher_settings: Settings, customer_db: str, central_db: str
) -> None:
    """`pusher status` prints, per resource, the cursor, the rows behind it and the lag."""
    seed_inventory(customer_db)
    shipped = seed_measurements(customer_db, devices=2, stop=100)
    async with running_pusher(pusher_settings):
        await wait_for(lambda: central_count(central_db) == shipped, what="rows")
    with psycopg.connect(customer_db) as conn:
        conn.execute(
            "INSERT INTO monitoring.power_measurements (device_id, time, received_at) "
            "SELECT 1, now() - make_interval(secs => s), now() + interval '5 minutes' "
            "FROM generate_series(1, 30) AS s"
        )
    proc = await start_pusher_process(pusher_env(pusher_settings), "status", capture=True)
    out, _ = await proc.communicate()
    assert proc.returncode == 0
    report = json.loads(out)
    measurements = report["resources"]["measurements"]
    assert measurements["backlog_rows"] == 30
    assert measurements["shipped_rows"] == shipped
    assert 290 <= measurements["lag_s"] <= 400
    assert report["resources"]["sites"]["last_status"] == 200
    assert report["blocking_transaction"] is None
