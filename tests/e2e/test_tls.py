"""The pusher and ingestd over HTTPS: a test CA (trustme), a verified certificate, and the
certificates the pusher must refuse."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path

import pytest
import trustme
from aiohttp.test_utils import TestServer
from ingestd.app import SERVER_OPTIONS, create_app
from ingestd.settings import Settings as IngestdSettings
from pusher.settings import Settings

from tests.fix_customer import seed_inventory, seed_measurements
from tests.fix_ingestd import central_count, ingest_url
from tests.fix_pg import scalar, wait_for
from tests.fix_pusher import metric, running_pusher, scrape, with_metrics

STATE = "SELECT {} FROM app.fleet_push_state WHERE resource = 'measurements'"

StartHttps = Callable[..., Awaitable[TestServer]]


@pytest.fixture(scope="module")
def test_ca() -> trustme.CA:
    """A certificate authority no system trusts."""
    return trustme.CA()


@pytest.fixture
def ca_bundle(test_ca: trustme.CA, tmp_path: Path) -> Path:
    """The test CA's certificate as a PEM file, as PUSHER_CA_BUNDLE takes it."""
    path = tmp_path / "fleet-ca.pem"
    test_ca.cert_pem.write_to_path(str(path))
    return path


@pytest.fixture
async def https_ingestd(
    test_ca: trustme.CA, ingestd_settings: IngestdSettings
) -> AsyncIterator[StartHttps]:
    """Start the real ingestd over HTTPS with a certificate for the given host names."""
    servers: list[TestServer] = []

    async def start(*hosts: str) -> TestServer:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        test_ca.issue_cert(*hosts).configure_cert(context)
        server = TestServer(create_app(ingestd_settings), host="127.0.0.1")
        await server.start_server(ssl=context, **SERVER_OPTIONS)
        servers.append(server)
        return server

    try:
        yield start
    finally:
        for server in servers:
            await server.close()


async def test_pusher_delivers_over_https_trusting_the_configured_ca(
    https_ingestd: StartHttps,
    ca_bundle: Path,
    pusher_settings: Settings,
    customer_db: str,
    central_db: str,
    capsys: pytest.CaptureFixture[str],
    pusher_logs: None,
) -> None:
    """With PUSHER_CA_BUNDLE naming the test CA, every row arrives over HTTPS, and the token
    appears in neither the logs nor the metrics."""
    server = await https_ingestd("127.0.0.1", "localhost")
    url = ingest_url(server)
    assert url.startswith("https://127.0.0.1:")
    seed_inventory(customer_db)
    expected = seed_measurements(customer_db, devices=4, stop=200)
    settings = with_metrics(replace(pusher_settings, ingest_url=url, ca_bundle=ca_bundle))
    async with running_pusher(settings):
        await wait_for(lambda: central_count(central_db) == expected, what="all rows")
        text = await scrape(settings)
    assert central_count(central_db, "devices") == 4
    assert metric(text, "fleet_pusher_rows_shipped_total", resource="measurements") == expected
    out = capsys.readouterr().out
    assert "batch_delivered" in out
    assert settings.token not in out and settings.token not in text


@pytest.mark.parametrize(
    ("hosts", "with_bundle", "cause"),
    [
        (("127.0.0.1", "localhost"), False, "unable to get local issuer certificate"),
        (("central.fleet.example",), True, "IP address mismatch"),
    ],
    ids=["untrusted-ca", "wrong-host"],
)
async def test_pusher_refuses_a_certificate_it_cannot_verify(
    https_ingestd: StartHttps,
    ca_bundle: Path,
    pusher_settings: Settings,
    customer_db: str,
    central_db: str,
    capsys: pytest.CaptureFixture[str],
    pusher_logs: None,
    hosts: tuple[str, ...],
    with_bundle: bool,
    cause: str,
) -> None:
    """A certificate from a CA the pusher does not trust (system roots only), or one issued
    for another host, is refused: nothing ships, the cursor stays, and the error names the TLS
    cause in the log, the stored state and the metrics, never the token."""
    server = await https_ingestd(*hosts)
    seed_inventory(customer_db)
    seed_measurements(customer_db, devices=2, stop=50)
    settings = with_metrics(
        replace(
            pusher_settings,
            ingest_url=ingest_url(server),
            ca_bundle=ca_bundle if with_bundle else None,
        )
    )
    async with running_pusher(settings):
        await asyncio.sleep(1.0)
        text = await scrape(settings)
    assert central_count(central_db) == 0
    assert central_count(central_db, "sites") == 0
    assert scalar(customer_db, STATE.format("cursor")) is None
    assert cause in scalar(customer_db, STATE.format("last_error"))
    assert metric(text, "fleet_pusher_failures_total", resource="measurements", status="tls") >= 1
    assert metric(text, "fleet_pusher_rows_shipped_total") == 0
    out = capsys.readouterr().out
    assert "tls_verify_failed" in out and "PUSHER_CA_BUNDLE" in out
    assert "certificate verify failed" in out and cause in out
    assert settings.token not in out and settings.token not in text
