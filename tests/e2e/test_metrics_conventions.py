"""Both metric pages follow Prometheus' conventions, the checks `promtool check metrics` runs."""

from __future__ import annotations

from importlib.metadata import version
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families
from pusher.settings import Settings

from tests.fix_customer import seed_inventory, seed_measurements
from tests.fix_ingestd import PostBatch, central_count
from tests.fix_pg import wait_for
from tests.fix_pusher import running_pusher, scrape, with_metrics
from tests.metrics_lint import lint_page, promtool_problems
from tests.samples import measurements

OPENMETRICS = "application/openmetrics-text; version=1.0.0"


def _check(text: str, service: str) -> None:
    assert lint_page(text) == []
    assert promtool_problems(text) in (None, [])
    families = {f.name: f for f in text_string_to_metric_families(text)}
    (build,) = families["fleet_build_info"].samples
    assert build.labels == {"service": service, "version": version(f"fleet-{service}")}
    assert {"process_cpu_seconds", "process_resident_memory_bytes", "process_open_fds"} <= set(
        families
    )


def test_the_checker_finds_what_promtool_finds() -> None:
    """The lint flags a counter without _total, a _total gauge, a non-base unit, an abbreviated
    unit, camelCase, a type in the name, a missing help text and a _created series."""
    page = "\n".join([
        "# HELP jobs_done Jobs.", "# TYPE jobs_done counter", "jobs_done_total 1.0",
        "jobs_done_created 1.7e9",
        "# HELP queue_total Queue.", "# TYPE queue_total gauge", "queue_total 3.0",
        "# HELP wait_milliseconds Wait.", "# TYPE wait_milliseconds gauge", "wait_milliseconds 3.0",
        "# HELP wait_ms Wait.", "# TYPE wait_ms gauge", "wait_ms 3.0",
        "# HELP queueDepth Depth.", "# TYPE queueDepth gauge", "queueDepth 1.0",
        "# HELP depth_gauge Depth.", "# TYPE depth_gauge gauge", "depth_gauge 1.0",
        "# TYPE quiet gauge", "quiet 1.0", "",
    ])  # fmt: skip
    problems = "\n".join(lint_page(page))
    for expected in ("_created", 'non-counter metrics should not have "_total"',
                     'use base unit "seconds" instead of "milliseconds"', "abbreviated units",
                     "camelCase", "should not include type 'gauge'", "quiet: no help text"):  # fmt: skip
        assert expected in problems, problems


async def test_ingestd_page_follows_the_conventions_and_negotiates_openmetrics(
    post_batch: PostBatch, customer_token: str, ingestd_client: TestClient[Any, Any]
) -> None:
    """After traffic, ingestd's /metrics passes the checks, has process_* and fleet_build_info
    with its version, no _created series, and answers OpenMetrics to a scraper that asks."""
    await post_batch(customer_token, "measurements", measurements(5))
    await post_batch("flt_" + "x" * 43, "measurements", measurements(1))
    resp = await ingestd_client.get("/metrics")
    assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    _check(await resp.text(), "ingestd")
    resp = await ingestd_client.get("/metrics", headers={"Accept": OPENMETRICS})
    assert resp.headers["Content-Type"].startswith("application/openmetrics-text")
    text = await resp.text()
    assert text.endswith("# EOF\n") and "_created" not in text


@pytest.mark.parametrize("accept", [None, OPENMETRICS])
async def test_pusher_page_follows_the_conventions(
    pusher_settings: Settings, customer_db: str, central_db: str, accept: str | None
) -> None:
    """After shipping rows, the pusher's /metrics passes the checks in both formats, with
    process_* and fleet_build_info."""
    seed_inventory(customer_db)
    expected = seed_measurements(customer_db, devices=2, stop=40)
    settings = with_metrics(pusher_settings)
    async with running_pusher(settings):
        await wait_for(lambda: central_count(central_db) == expected, what="all rows")
        if accept is None:
            _check(await scrape(settings), "pusher")
            return
        url = f"http://{settings.metrics_host}:{settings.metrics_port}/metrics"
        async with aiohttp.ClientSession() as session, session.get(url, headers={"Accept": accept}) as resp:  # fmt: skip
            assert resp.headers["Content-Type"].startswith("application/openmetrics-text")
            text = await resp.text()
    assert "_created" not in text and "fleet_pusher_rows_shipped_total" in text
