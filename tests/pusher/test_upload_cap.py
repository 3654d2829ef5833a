"""The upload cap (PUSHER_MAX_UPLOAD_BYTES_PER_S): a token bucket, and what `pusher status` and the
metrics say about it."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace

import pytest
from pusher.delivery.uploadcap import UploadCap, drain_seconds
from pusher.errors import ConfigError
from pusher.settings import Settings
from pusher.source.columns import READ_MEASUREMENT_COLUMNS
from pusher.source.cursor import SELECTION
from pusher.source.reads import READ_MEASUREMENTS

from tests.fix_customer import seed_inventory, seed_measurements
from tests.fix_ingestd import central_count
from tests.fix_pg import wait_for
from tests.fix_pusher import (
    metric,
    pusher_env,
    running_pusher,
    scrape,
    start_pusher_process,
    with_metrics,
)


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


async def test_bucket_paces_bytes_to_the_cap() -> None:
    """At 1,000 B/s, 10 requests of 500 B go out over 3.5 s (a second's worth and one request
    at once, then one every 0.5 s), and a
    request larger than the bucket is sent whole, the next ones waiting until it is paid back."""
    fake = FakeTime()
    cap = UploadCap(1000, clock=fake.clock, sleep=fake.sleep)
    for _ in range(10):
        await cap.take(500)
    assert fake.now == pytest.approx(3.5)
    fake.now += 10  # idle: the bucket refills to one second's worth, not more
    started = fake.now
    await cap.take(5000)
    assert fake.now == started
    await cap.take(1)
    assert fake.now - started == pytest.approx(4.0, abs=0.01)


def test_drain_projection() -> None:
    """Backlog x bytes per row so far / cap; 0 without a cap or a history."""
    assert drain_seconds(10_000, 30_000, 1_000, 300) == pytest.approx(1000.0)
    assert drain_seconds(10_000, 30_000, 1_000, 0) == 0.0
    assert drain_seconds(10_000, 0, 0, 300) == 0.0


def test_settings_of_the_wire() -> None:
    """The wire settings have safe defaults and refuse nonsense, naming the variable."""
    base = {"PUSHER_DATABASE_URL": "postgresql://x@127.0.0.1/m"}
    settings = Settings.from_env(base)
    assert (settings.wire_format, settings.full_set_interval_s) == ("auto", 3600.0)
    assert settings.max_upload_bytes_per_s == 0
    with pytest.raises(ConfigError, match="PUSHER_WIRE_FORMAT"):
        Settings.from_env({**base, "PUSHER_WIRE_FORMAT": "xml"})
    with pytest.raises(ConfigError, match="PUSHER_MAX_UPLOAD_BYTES_PER_S"):
        Settings.from_env({**base, "PUSHER_MAX_UPLOAD_BYTES_PER_S": "-1"})


def test_columnar_reads_use_the_cursor_query() -> None:
    """The binary read selects rows with the very text of the cursor query (same order, same
    snapshot-xmin horizon, same limit), so the no-loss argument holds for both encodings."""
    assert SELECTION.strip() in READ_MEASUREMENTS
    assert SELECTION.strip() in READ_MEASUREMENT_COLUMNS


async def test_capped_backlog_drains_under_the_cap_and_status_says_how_long(
    pusher_settings: Settings, customer_db: str, central_db: str
) -> None:
    """With a cap of 2 kB/s a backlog takes at least its bytes / cap to drain; the metrics show
    the cap and the bytes sent, and `pusher status` the cap, bytes per row and a drain time."""
    seed_inventory(customer_db)
    rows = seed_measurements(customer_db, stop=2000)  # 8,000 rows
    settings = with_metrics(replace(pusher_settings, max_upload_bytes_per_s=2_000))
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with running_pusher(settings):
        await wait_for(lambda: central_count(central_db) == rows, what="the backlog", timeout_s=60)
        elapsed = loop.time() - started
        text = await scrape(settings)
    sent = metric(text, "fleet_pusher_upload_bytes_total")
    assert metric(text, "fleet_pusher_upload_cap_bytes_per_second") == 2_000
    assert sent > 2_000 * 2
    assert elapsed >= (sent - 2_000) / 2_000 - 0.5
    more = seed_measurements(customer_db, start=2000, stop=2500)
    env = pusher_env(settings, PUSHER_MAX_UPLOAD_BYTES_PER_S="1000")
    proc = await start_pusher_process(env, "status", capture=True)
    out, _ = await proc.communicate()
    report = json.loads(out)
    entry = report["resources"]["measurements"]
    assert report["upload_cap_bytes_per_s"] == 1000
    assert entry["backlog_rows"] == more and entry["sent_bytes"] > 0
    assert entry["projected_drain_s"] == pytest.approx(more * entry["bytes_per_row"] / 1000, 0.01)
