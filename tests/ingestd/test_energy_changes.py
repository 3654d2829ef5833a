"""The corrections feed (`…/energy/changes?since=`): a late back-fill shows, a re-sent row does not,
on both storage paths.

Samples go in through the real HTTP ingest path, the housekeeping runs its cycle, and the feed is
read through the read API (validated against the OpenAPI document).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from aiohttp.test_utils import TestClient
from ingestd.settings import Settings

from tests.fix_ingestd import PostBatch, first_housekeeping_done
from tests.ingestd.test_energy import ADMIN, AUTH
from tests.ingestd.test_storage import _cycle
from tests.openapi_check import assert_matches
from tests.samples import NOW, device, measurement, site

HOUR = timedelta(hours=1)
START = (NOW - timedelta(days=3)).replace(minute=0, second=0)
CHANGES = "/api/fleet/customers/{code}/energy/changes"
PATH = "/api/fleet/customers/DEV0001/energy/changes"
KOLKATA = "Asia/Kolkata"


@pytest.fixture
def central_db(storage_db: str) -> str:
    """This module's central database: each storage path in turn."""
    return storage_db


@pytest.fixture
def ingestd_settings(ingestd_settings: Settings) -> Settings:
    """The test ingestd, with the read API on."""
    return replace(ingestd_settings, admin_token=ADMIN)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _samples(device_id: int, hours: list[int], minutes: range) -> list[dict[str, Any]]:
    """Samples every 10 minutes in the given hours after START, the register rising 1 kWh per sample."""
    return [
        measurement(
            device_id,
            START + h * HOUR + timedelta(minutes=m),
            energy_imp_kwh=100.0 + h * 6 + m / 10,
        )
        for h in hours
        for m in minutes
    ]


async def _changes(
    client: TestClient[Any, Any], params: dict[str, str], status: int = 200
) -> dict[str, Any]:
    resp = await client.get(PATH, params=params, headers=AUTH)
    body: dict[str, Any] = await resp.json()
    assert resp.status == status, body
    assert_matches(CHANGES, "get", status, body)
    return body


async def _setup(post_batch: PostBatch, token: str) -> None:
    """Site 1 in Kolkata with device 1, site 2 in UTC with device 2; hours 0-1 and 4-5 after
    START of both, the hours between a hole."""
    for kind, items in (
        ("sites", [site(1, timezone=KOLKATA), site(2, timezone="UTC")]),
        ("devices", [device(1, 1), device(2, 2)]),
        ("measurements", _samples(1, [0, 1, 4, 5], range(0, 60, 10))),
        ("measurements", _samples(2, [0, 1, 4, 5], range(0, 60, 10))),
    ):
        resp = await post_batch(token, kind, items)
        assert resp.status == 200, await resp.json()


async def test_a_late_backfill_shows_in_the_changes_feed(
    post_batch: PostBatch,
    customer_token: str,
    ingestd_client: TestClient[Any, Any],
    ingestd_settings: Settings,
) -> None:
    """A back-fill into a hole of stored hours lists the span from the hour before the hole to the
    one after it, with its local days in the site's zone; re-sending the same row lists nothing."""
    await first_housekeeping_done(ingestd_client)
    await _setup(post_batch, customer_token)
    await _cycle(ingestd_settings)
    # The first upload was itself late (three days old): it is listed, as the hours it filled.
    first = await _changes(ingestd_client, {"since": _iso(NOW - timedelta(days=1))})
    assert {(r["device_id"], r["from"], r["to"]) for r in first["rows"]} == {
        (d, _iso(START), _iso(START + 6 * HOUR)) for d in (1, 2)
    }
    assert first["more"] is False

    since = first["next_since"]
    backfill = [measurement(1, START + 2 * HOUR + timedelta(minutes=30), energy_imp_kwh=111.0)]
    resp = await post_batch(customer_token, "measurements", backfill)
    assert resp.status == 200, await resp.json()
    await _cycle(ingestd_settings)
    body = await _changes(ingestd_client, {"since": since})
    [row] = body["rows"]
    assert (row["device_id"], row["site_id"], row["from"], row["to"]) == (
        1, 1, _iso(START + HOUR), _iso(START + 5 * HOUR),
    )  # fmt: skip
    zone = ZoneInfo(KOLKATA)
    local = {
        (START + HOUR).astimezone(zone).date(),
        (START + 5 * HOUR - timedelta(microseconds=1)).astimezone(zone).date(),
    }
    assert row["zone"] == KOLKATA and set(row["days"]) == {d.isoformat() for d in local}
    assert body["next_since"] == row["revised_at"] and row["revised_at"] > since

    resp = await post_batch(customer_token, "measurements", backfill)  # the same row again
    assert resp.status == 200, await resp.json()
    await _cycle(ingestd_settings)
    assert (await _changes(ingestd_client, {"since": body["next_since"]}))["rows"] == []


async def test_the_feed_filters_and_pages(
    post_batch: PostBatch,
    customer_token: str,
    ingestd_client: TestClient[Any, Any],
    ingestd_settings: Settings,
) -> None:
    """`site_id` and `device_id` keep their devices' revisions; a page ends at a whole revised_at,
    and `next_since` continues after it."""
    await first_housekeeping_done(ingestd_client)
    await _setup(post_batch, customer_token)
    await _cycle(ingestd_settings)
    since = _iso(NOW - timedelta(days=1))
    by_site = await _changes(ingestd_client, {"since": since, "site_id": "2"})
    assert [r["device_id"] for r in by_site["rows"]] == [2]
    assert by_site["rows"][0]["zone"] == "UTC"
    by_device = await _changes(ingestd_client, {"since": since, "device_id": "1"})
    assert [r["device_id"] for r in by_device["rows"]] == [1]

    for device_id in (1, 2):  # a second recompute, later
        late = [measurement(device_id, START + 3 * HOUR, energy_imp_kwh=115.0)]
        assert (await post_batch(customer_token, "measurements", late)).status == 200
        await _cycle(ingestd_settings)
    page = await _changes(ingestd_client, {"since": since, "limit": "1"})
    assert [r["device_id"] for r in page["rows"]] == [1, 2]  # one recompute: never split
    assert page["more"] is True
    rest = await _changes(ingestd_client, {"since": page["next_since"], "limit": "1"})
    assert len(rest["rows"]) >= 1 and all(
        r["revised_at"] > page["next_since"] for r in rest["rows"]
    )


@pytest.mark.parametrize(
    ("params", "status", "parameter"),
    [
        ({}, 400, "since"),
        ({"since": "yesterday"}, 400, "since"),
        ({"since": "2026-01-01T00:00:00"}, 400, "since"),
        ({"since": "2026-01-01T00:00:00Z", "limit": "0"}, 400, "limit"),
        ({"since": "2026-01-01T00:00:00Z", "device_id": "-1"}, 400, "device_id"),
        ({"since": "2026-01-01T00:00:00Z", "until": "x"}, 400, "until"),
    ],
)
async def test_bad_parameters_are_named(
    ingestd_client: TestClient[Any, Any],
    customer_token: str,
    params: dict[str, str],
    status: int,
    parameter: str,
) -> None:
    """A missing or zoneless `since`, a bad limit or id, an unknown parameter: a 400 naming it."""
    assert customer_token
    body = await _changes(ingestd_client, params, status)
    assert body["parameter"] == parameter, body


async def test_unknown_customer_is_named(ingestd_client: TestClient[Any, Any]) -> None:
    """An unknown customer code is a 404 naming `code`."""
    path = "/api/fleet/customers/NOPE/energy/changes"
    resp = await ingestd_client.get(path, params={"since": "2026-01-01T00:00:00Z"}, headers=AUTH)
    body = await resp.json()
    assert resp.status == 404 and body["parameter"] == "code", body
