"""Reconciliation, central side: the digest endpoint, repair batches, the database identity.

The digest tests run on both storage paths (the TimescaleDB variant skips where the extension is
not installed); on TimescaleDB the rows' chunks are compressed first, so the digests are read
through decompression.
"""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from aiohttp.test_utils import TestClient
from fleetcore.protocol import (
    DATABASE_IDENTITY_HEADER,
    INGEST_PATH,
    MAX_DIGEST_BODY_BYTES,
    RECONCILE_PATH,
    REPAIR_HEADER,
)
from fleetcore.reconcile import MAX_CELLS, CellDigest, format_hash, row_hash

from tests.fix_ingestd import PostBatch
from tests.samples import NOW, measurement

pytestmark = pytest.mark.usefixtures("customer_token")

ADMIN = "a" * 40
DAY = (NOW - timedelta(days=3)).replace(hour=0, minute=0, second=0)


@pytest.fixture
def central_db(storage_db: str) -> str:
    """This module's central database: each storage path in turn."""
    return storage_db


@pytest.fixture
def ingestd_settings(ingestd_settings: Any) -> Any:
    """The test ingestd, with the read API on."""
    from dataclasses import replace

    return replace(ingestd_settings, admin_token=ADMIN)


def _reference(
    rows: list[dict[str, Any]], device: int | None, start: datetime, hours: int
) -> CellDigest:
    """The digest of a cell computed in Python from the rows, with fleetcore's reference hash."""
    end = start + timedelta(hours=hours)
    total = CellDigest(0, 0)
    for row in rows:
        when = datetime.fromisoformat(row["time"])
        if (device is None or row["device_id"] == device) and start <= when < end:
            total = total + CellDigest(1, row_hash(row["device_id"], when))
    return total


def _cell(
    digest: CellDigest, start: datetime, hours: int, device: int | None = None
) -> dict[str, Any]:
    cell: dict[str, Any] = {
        "start": start.isoformat(),
        "hours": hours,
        "count": digest.count,
        "hash": format_hash(digest.hash),
    }
    if device is not None:
        cell["device"] = device
    return cell


async def _digests(
    client: TestClient[Any, Any], token: str, body: Any, *, raw: bytes | None = None
) -> tuple[int, dict[str, Any], str | None]:
    data = raw if raw is not None else gzip.compress(json.dumps(body).encode())
    resp = await client.post(
        RECONCILE_PATH,
        data=data,
        headers={
            "X-Customer-Token": token,
            "Content-Type": "application/json",
            "Content-Encoding": "gzip",
        },
    )
    return resp.status, await resp.json(), resp.headers.get(DATABASE_IDENTITY_HEADER)


def _compress_chunks(dsn: str) -> int:
    """Compress every chunk of the hypertable (TimescaleDB only); return how many."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'").fetchone():
            return 0
        rows = conn.execute(
            "SELECT compress_chunk(c, if_not_compressed => true) "
            "FROM show_chunks('fleet.power_measurements_scaled') c"
        ).fetchall()
    return len(rows)


async def test_digests_equal_the_reference_and_name_the_differing_cells(
    post_batch: PostBatch,
    ingestd_client: TestClient[Any, Any],
    customer_token: str,
    central_db: str,
) -> None:
    """The centre's digest of every cell (one device or all listed, an hour or a day) equals the
    Python reference over the rows stored, compressed chunks included; a cell the pusher holds
    differently is answered with the centre's own digest."""
    rows = [
        measurement(device, DAY + timedelta(minutes=7 * i + device))
        for device in (1, 2, 3)
        for i in range(400)
    ]
    resp = await post_batch(customer_token, "measurements", rows)
    assert resp.status == 200 and (await resp.json())["accepted"] == len(rows)
    _compress_chunks(central_db)
    cells = [
        _cell(_reference(rows, None, DAY, 24), DAY, 24),
        _cell(_reference(rows, 2, DAY, 24), DAY, 24, 2),
        _cell(_reference(rows, 3, DAY + timedelta(hours=5), 1), DAY + timedelta(hours=5), 1, 3),
        _cell(_reference(rows, None, DAY, 72), DAY, 72),
    ]
    wrong = _reference(rows, 1, DAY + timedelta(hours=2), 1) + CellDigest(1, 12345)
    cells.append(_cell(wrong, DAY + timedelta(hours=2), 1, 1))
    status, answer, identity = await _digests(
        ingestd_client, customer_token, {"devices": [1, 2, 3], "cells": cells}
    )
    assert status == 200, answer
    assert identity
    assert answer["compared"] == 5
    truth = _reference(rows, 1, DAY + timedelta(hours=2), 1)
    assert answer["differing"] == [
        {"index": 4, "count": truth.count, "hash": format_hash(truth.hash)}
    ]
    assert (
        datetime.fromisoformat(answer["earliest"]) < DAY < datetime.fromisoformat(answer["latest"])
    )


async def test_digests_cover_only_the_listed_devices_and_this_customer(
    post_batch: PostBatch,
    ingestd_client: TestClient[Any, Any],
    customer_token: str,
    other_token: str,
) -> None:
    """Rows of devices the request does not list, and another customer's rows, are outside
    every cell."""
    mine = [measurement(d, DAY + timedelta(minutes=i)) for d in (1, 9) for i in range(30)]
    theirs = [measurement(1, DAY + timedelta(minutes=i, seconds=30)) for i in range(30)]
    assert (await post_batch(customer_token, "measurements", mine)).status == 200
    assert (await post_batch(other_token, "measurements", theirs)).status == 200
    expected = _reference(mine, 1, DAY, 24)
    status, answer, _ = await _digests(
        ingestd_client, customer_token, {"devices": [1], "cells": [_cell(expected, DAY, 24)]}
    )
    assert status == 200 and answer["differing"] == [], answer


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"cells": []}, "invalid_digest"),
        ({"devices": [1], "cells": [{"start": "2026-01-01T00:30:00Z", "hours": 1, "count": 0, "hash": "0" * 16}]}, "invalid_digest"),
        ({"devices": [1], "cells": [{"start": "2026-01-01T00:00:00Z", "hours": 1, "count": 0, "hash": "xyz"}]}, "invalid_digest"),
        ({"devices": [1], "cells": [{"device": 2, "start": "2026-01-01T00:00:00Z", "hours": 1, "count": 0, "hash": "0" * 16}]}, "invalid_digest"),
        ({"devices": [1], "cells": [{"start": "2026-01-01T00:00:00", "hours": 1, "count": 0, "hash": "0" * 16}]}, "invalid_digest"),
        ({"devices": [1], "cells": [{"start": "2000-01-01T00:00:00Z", "hours": 1, "count": 0, "hash": "0" * 16}, {"start": "2026-01-01T00:00:00Z", "hours": 1, "count": 0, "hash": "0" * 16}]}, "invalid_digest"),
        ({"devices": [1], "cells": [{"start": "2026-01-01T00:00:00Z", "hours": 1, "count": 0, "hash": "0" * 16}] * (MAX_CELLS + 1)}, "invalid_digest"),
    ],
    ids=["no-devices", "not-on-the-hour", "bad-hash", "unlisted-device", "no-offset", "span", "too-many-cells"],
)  # fmt: skip
async def test_malformed_digest_requests_are_400_with_a_code(
    ingestd_client: TestClient[Any, Any], customer_token: str, body: Any, code: str
) -> None:
    """A body that is not a well-formed digest request is refused with 400 and says why."""
    status, answer, _ = await _digests(ingestd_client, customer_token, body)
    assert status == 400 and answer["error"] == code, answer
    assert answer["detail"]


async def test_digest_bodies_are_bounded_and_need_a_token(
    ingestd_client: TestClient[Any, Any], customer_token: str
) -> None:
    """A digest body inflating past its limit is 413 (stopped while inflating), not JSON is 400,
    no token is 401."""
    bomb = gzip.compress(b" " * (MAX_DIGEST_BODY_BYTES + 10))
    status, answer, _ = await _digests(ingestd_client, customer_token, None, raw=bomb)
    assert status == 413 and answer["error"] == "payload_too_large"
    status, answer, _ = await _digests(
        ingestd_client, customer_token, None, raw=gzip.compress(b"{")
    )
    assert status == 400 and answer["error"] == "invalid_digest"
    status, answer, _ = await _digests(
        ingestd_client, "flt_" + "x" * 43, {"devices": [], "cells": []}
    )
    assert status == 401


async def test_identity_header_names_the_database(
    post_batch: PostBatch, central_db: str, customer_token: str
) -> None:
    """Every ingest answer carries the central database's system identifier, timeline and start."""
    resp = await post_batch(customer_token, "measurements", [measurement(1, DAY)])
    identity = resp.headers[DATABASE_IDENTITY_HEADER]
    with psycopg.connect(central_db) as conn:
        row = conn.execute(
            "SELECT s.system_identifier, c.timeline_id, pg_postmaster_start_time() "
            "FROM pg_control_system() s, pg_control_checkpoint() c"
        ).fetchone()
    assert row is not None
    started = round(row[2].astimezone(UTC).timestamp() * 1_000_000)
    assert identity == f"{row[0]}.{row[1]}.{started}"


async def test_repair_batches_are_marked_counted_and_shown(
    post_batch: PostBatch,
    ingestd_client: TestClient[Any, Any],
    customer_token: str,
    central_db: str,
) -> None:
    """A batch sent with X-Push-Repair: 1 is stored like any other, marked in its audit row,
    counted apart in the metrics and shown in the customer's reconciliation summary; a bad value
    of the header is a 400."""
    rows = [measurement(1, DAY + timedelta(minutes=i)) for i in range(10)]
    assert (await post_batch(customer_token, "measurements", rows[:6])).status == 200
    resp = await post_batch(customer_token, "measurements", rows, headers={REPAIR_HEADER: "1"})
    assert resp.status == 200
    assert (await resp.json())["accepted"] == 4
    bad = await post_batch(customer_token, "measurements", rows, headers={REPAIR_HEADER: "yes"})
    assert bad.status == 400 and (await bad.json())["error"] == "invalid_repair"
    with psycopg.connect(central_db) as conn:
        marks = conn.execute(
            "SELECT repair, accepted FROM fleet.ingest_events WHERE status = 200 ORDER BY id"
        ).fetchall()
    assert marks == [(False, 6), (True, 4)]
    metrics = await (await ingestd_client.get("/metrics")).text()
    assert 'fleet_ingest_repair_rows_total{outcome="accepted"} 4.0' in metrics
    assert 'fleet_ingest_repair_rows_total{outcome="duplicate"} 6.0' in metrics
    status, _, _ = await _digests(
        ingestd_client,
        customer_token,
        {"devices": [1], "cells": [_cell(CellDigest(0, 0), DAY, 1)]},
    )
    assert status == 200
    summary = await ingestd_client.get(
        "/api/fleet/customers/DEV0001/reconciliation",
        headers={"Authorization": f"Bearer {ADMIN}"},
    )
    body = await summary.json()
    assert summary.status == 200, body
    assert body["repair_batches"] == 1 and body["repair_rows_sent"] == 10
    assert body["repair_rows_accepted"] == 4
    assert body["last_cells"] == 1 and body["last_differing"] == 1
    assert body["last_digest_at"] and body["last_repair_at"]
    resp = await ingestd_client.get(
        INGEST_PATH.replace("ingest", "customers/NOPE/reconciliation"),
        headers={"Authorization": f"Bearer {ADMIN}"},
    )
    assert resp.status == 404
