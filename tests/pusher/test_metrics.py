"""The pusher's /metrics: what each series reports, and that secrets never appear in it."""

from __future__ import annotations

import asyncio
import socket
from dataclasses import replace

import aiohttp
import psycopg
import pytest
from fleetcore.protocol import BatchType
from pusher import run
from pusher.errors import ConfigError, DeliveryError, PermanentDeliveryError, RetryLater
from pusher.ops.metrics import PusherMetrics, failure_status, outcome_of
from pusher.ops.scrape import serve_metrics
from pusher.settings import Settings

from tests.fix_customer import seed_inventory, seed_measurements
from tests.fix_faults import Answer, FaultFront
from tests.fix_ingestd import central_count
from tests.fix_pg import wait_for
from tests.fix_pusher import metric, running_pusher, scrape, with_metrics

# Two waves of rows stored five minutes apart (received_at), in push order.
INSERT_TWO_WAVES = """
INSERT INTO monitoring.power_measurements (device_id, time, v1, received_at)
SELECT 1, now() - make_interval(secs => s), 230.0, now() - interval '300 seconds'
FROM generate_series(1, 40) AS s;
INSERT INTO monitoring.power_measurements (device_id, time, v1, received_at)
SELECT 2, now() - make_interval(secs => s), 230.0, now()
FROM generate_series(1, 60) AS s;
"""


@pytest.mark.parametrize(
    ("error", "outcome", "status"),
    [
        (RetryLater("", status=429, retry_after_s=1), "rate_limited", "429"),
        (RetryLater("", status=503, retry_after_s=None), "unavailable", "503"),
        (DeliveryError("", status=500), "server_error", "500"),
        (PermanentDeliveryError("", status=401), "client_error", "401"),
        (PermanentDeliveryError("", status=413), "too_large", "413"),
        (DeliveryError("", transport="timeout"), "network_error", "timeout"),
        (PermanentDeliveryError("", transport="tls"), "network_error", "tls"),
    ],
)
def test_each_failure_has_its_outcome_and_status_label(
    error: DeliveryError, outcome: str, status: str
) -> None:
    """Every way a batch can fail maps to one of the fixed outcome labels and a status label."""
    assert outcome_of(error) == outcome
    assert failure_status(error) == status


def test_each_pusher_has_its_own_registry() -> None:
    """Two pushers in one process keep separate series (no global registry)."""
    first, second = PusherMetrics(), PusherMetrics()
    first.rows_shipped.labels("measurements").inc(5)
    assert first.value("fleet_pusher_rows_shipped_total", resource="measurements") == 5
    assert second.value("fleet_pusher_rows_shipped_total", resource="measurements") == 0


async def test_scrape_reports_shipping_and_failures_and_never_the_token(
    pusher_settings: Settings, customer_db: str, central_db: str, fault_front: FaultFront
) -> None:
    """After a 413 and a 500 the scrape shows every row shipped, each batch under its outcome
    and status, a drained backlog, no lag, no backoff; the token appears nowhere."""
    seed_inventory(customer_db, sites=2, devices=4)
    expected = seed_measurements(customer_db, devices=4, stop=300)
    fault_front.plan(Answer.json(413, {"error": "payload_too_large"}), Answer.json(500))
    settings = with_metrics(replace(pusher_settings, ingest_url=fault_front.url))
    async with running_pusher(settings):
        await wait_for(lambda: central_count(central_db) == expected, what="all rows")
        await asyncio.sleep(0.5)
        text = await scrape(settings)
        async with aiohttp.ClientSession() as session:
            other = f"http://127.0.0.1:{settings.metrics_port}/"
            async with session.get(other) as resp:
                assert resp.status == 404
    m = "measurements"
    assert metric(text, "fleet_pusher_rows_shipped_total", resource=m) == expected
    assert metric(text, "fleet_pusher_rows_shipped_total", resource="sites") >= 2
    assert metric(text, "fleet_pusher_batches_total", resource=m, outcome="too_large") == 1
    assert metric(text, "fleet_pusher_batches_total", resource=m, outcome="server_error") == 1
    assert metric(text, "fleet_pusher_batches_total", resource=m, outcome="ok") >= 3
    assert metric(text, "fleet_pusher_batches_total", resource=m, outcome="rate_limited") == 0
    assert metric(text, "fleet_pusher_failures_total", resource=m, status="413") == 1
    assert metric(text, "fleet_pusher_failures_total", resource=m, status="500") == 1
    assert metric(text, "fleet_pusher_consecutive_failures", resource=m) == 0
    assert metric(text, "fleet_pusher_backoff_seconds", resource=m) == 0
    assert metric(text, "fleet_pusher_backlog_rows") == 0
    assert metric(text, "fleet_pusher_lag_seconds", resource=m) == 0
    assert metric(text, "fleet_pusher_batch_size", resource="devices") == 4
    assert 1 <= metric(text, "fleet_pusher_batch_size", resource=m) <= settings.batch_size
    assert metric(text, "fleet_pusher_blocking_transaction_age_seconds") == 0
    assert metric(text, "fleet_pusher_quarantined_rows_total") == 0
    assert metric(text, "fleet_pusher_cursor_resets_total") == 0
    assert settings.token not in text


async def test_refused_pusher_shows_backlog_lag_failures_and_backoff(
    pusher_settings: Settings, customer_db: str, central_db: str
) -> None:
    """With a token ingestd refuses, the scrape shows every row still behind the cursor, the
    five minutes between the oldest and newest waiting row as lag, the 401s, and the wait
    until the next attempt; the (wrong) token appears nowhere."""
    with psycopg.connect(customer_db) as conn:
        conn.execute(INSERT_TWO_WAVES)
    settings = with_metrics(
        replace(pusher_settings, token="flt_refused-secret-value", backoff_cap_s=5.0)
    )
    async with running_pusher(settings):
        await asyncio.sleep(0.8)
        text = await scrape(settings)
    m = "measurements"
    assert central_count(central_db) == 0
    assert metric(text, "fleet_pusher_backlog_rows") == 100
    assert 295 <= metric(text, "fleet_pusher_lag_seconds", resource=m) <= 305
    assert metric(text, "fleet_pusher_failures_total", resource=m, status="401") == 1
    assert metric(text, "fleet_pusher_batches_total", resource=m, outcome="client_error") == 1
    assert metric(text, "fleet_pusher_consecutive_failures", resource=m) == 1
    assert 3.5 <= metric(text, "fleet_pusher_backoff_seconds", resource=m) <= 5.0
    assert metric(text, "fleet_pusher_rows_shipped_total", resource=m) == 0
    assert "flt_refused-secret-value" not in text


async def test_metrics_port_in_use_fails_at_start_naming_the_variable(customer_db: str) -> None:
    """A metrics port another process holds stops the pusher at start with PUSHER_METRICS_PORT
    named, before it pushes anything."""
    # No ingestd: the pusher stops before it sends (and at the lowest dependency versions an
    # in-process ingestd's teardown right after its start hung to the 300 s timeout).
    settings = with_metrics(
        Settings(database_url=customer_db, enabled=True, ingest_url="http://127.0.0.1:9",
                 token="flt_" + "x" * 43, reconcile_interval_s=0.0)
    )  # fmt: skip
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", settings.metrics_port))
        holder.listen()
        with pytest.raises(ConfigError, match="PUSHER_METRICS_PORT"):
            # Bounded: a start that is not refused would push until stopped.
            await asyncio.wait_for(run(settings, asyncio.Event()), 60)


def test_the_stop_summary_counts_in_whole_numbers() -> None:
    """The `stopped` log line says `measurements_rows: 3`, not `3.0`; zero counters are left out."""
    metrics = PusherMetrics()
    metrics.delivered(BatchType.SITES, 2, 0)
    metrics.delivered(BatchType.MEASUREMENTS, 3, 1)
    summary = metrics.summary()
    assert summary == {"sites_rows": 2, "measurements_rows": 3}
    assert all(type(v) is int for v in summary.values())


async def test_the_listener_speaks_http_as_scrapers_expect() -> None:
    """The metrics listener answers OpenMetrics or text as `Accept` asks, gzip when accepted,
    headers alone to HEAD, 405 to another method."""
    metrics = PusherMetrics()
    metrics.rows_shipped.labels("measurements").inc(7)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with (
        serve_metrics(metrics.registry, "127.0.0.1", port) as url,
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as session,
    ):
        async with session.get(url, headers={"Accept-Encoding": "identity"}) as resp:
            text = await resp.text()
            assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/plain")
            assert 'fleet_pusher_rows_shipped_total{resource="measurements"} 7.0' in text
        openmetrics = {"Accept": "application/openmetrics-text", "Accept-Encoding": "gzip"}
        async with session.get(url, headers=openmetrics) as resp:
            assert resp.headers["Content-Encoding"] == "gzip"
            assert resp.headers["Content-Type"].startswith("application/openmetrics-text")
            assert (await resp.text()).endswith("# EOF\n")
        async with session.head(url) as resp:
            assert resp.status == 200 and await resp.read() == b""
        async with session.post(url, data=b"x") as resp:
            assert resp.status == 405 and resp.headers["Allow"] == "GET, HEAD"
