"""Every status code of the push protocol, as a client observes it."""

from __future__ import annotations

import asyncio
import gzip
import time
from datetime import timedelta
from itertools import pairwise
from typing import Any

import psycopg
import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient
from ingestd.app import INGEST_PATH, SERVER_OPTIONS, create_app
from ingestd.customers import add_customer, revoke_tokens, rotate_token
from ingestd.settings import Settings

from tests.fix_ingestd import PostBatch
from tests.fix_pg import scalar, wait_for
from tests.samples import encode, measurements, site


async def test_unknown_batch_type_is_400(post_batch: PostBatch, customer_token: str) -> None:
    """An X-Batch-Type outside sites/devices/measurements is refused with a named error."""
    resp = await post_batch(customer_token, "readings", [])
    assert resp.status == 400
    assert (await resp.json())["error"] == "unknown_batch_type"


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"{not json", "invalid_json"),
        (b'{"rows": []}', "invalid_batch"),
        (b'{"items": {"a": 1}}', "invalid_batch"),
        (b"[1, 2, 3]", "invalid_batch"),
        (b'{"items": [' + b"[" * 5000 + b"]" * 5000 + b"]}", "invalid_json"),
        (b'\xff\xfe{"items": []}', "invalid_json"),
    ],
)
async def test_malformed_body_is_400(
    post_batch: PostBatch, customer_token: str, body: bytes, code: str
) -> None:
    """A body that is not JSON, not UTF-8, too deep, or has no items list is a 400 with its cause."""
    resp = await post_batch(customer_token, "measurements", body=gzip.compress(body))
    assert resp.status == 400
    assert (await resp.json())["error"] == code


async def test_invalid_utf8_inside_a_row_rejects_that_row(
    post_batch: PostBatch, customer_token: str, central_db: str
) -> None:
    """Invalid UTF-8 inside one row rejects that row (kept, escaped, in the dead letters); the others are stored."""
    good = encode(measurements(2), gzip=False)[len(b'{"items":[') : -2]
    body = b'{"items":[' + good + b',{"device_id":1,"name":"\xff\xfe"}]}'
    resp = await post_batch(customer_token, "measurements", body=gzip.compress(body))
    assert resp.status == 200
    data = await resp.json()
    assert (data["accepted"], data["rejected"]) == (2, 1)
    with psycopg.connect(central_db) as conn:
        payload = conn.execute("SELECT payload FROM fleet.rejected_rows").fetchone()
    assert payload is not None and "\\xff" in payload[0]


@pytest.mark.parametrize(
    "body",
    [b"this is not gzip at all", gzip.compress(encode(measurements(50), gzip=False))[:-40]],
    ids=["corrupt", "truncated"],
)
async def test_bad_gzip_is_400(post_batch: PostBatch, customer_token: str, body: bytes) -> None:
    """Corrupt or truncated gzip is a 400 invalid_gzip, not a 500."""
    resp = await post_batch(customer_token, "measurements", body=body)
    assert resp.status == 400
    assert (await resp.json())["error"] == "invalid_gzip"


async def test_multi_member_gzip_is_accepted(post_batch: PostBatch, customer_token: str) -> None:
    """A gzip stream of several members (as pigz writes) decodes as one body."""
    raw = encode(measurements(10), gzip=False)
    body = gzip.compress(raw[:100]) + gzip.compress(raw[100:])
    resp = await post_batch(customer_token, "measurements", body=body)
    assert resp.status == 200
    assert (await resp.json())["accepted"] == 10


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Customer-Token": ""},
        {"X-Customer-Token": "flt_unknown_token_value_000000000000000000000"},
        {"X-Customer-Token": "not-even-the-right-shape"},
    ],
    ids=["empty", "unknown", "malformed"],
)
async def test_bad_tokens_get_one_identical_401(
    post_batch: PostBatch, headers: dict[str, str]
) -> None:
    """Missing, unknown and malformed tokens all get the same 401 body."""
    resp = await post_batch(None, "measurements", measurements(1), headers=headers)
    assert resp.status == 401
    assert await resp.json() == {"error": "unauthorized"}


async def test_missing_token_is_401(post_batch: PostBatch) -> None:
    """A request without X-Customer-Token is a 401 with the common body."""
    resp = await post_batch(None, "measurements", measurements(1))
    assert resp.status == 401
    assert await resp.json() == {"error": "unauthorized"}


async def _until_refused(post_batch: PostBatch, token: str) -> ClientResponse:
    """The first answer to a sites batch that is not a 200, within 10 s: a cached token ends when
    its change notification arrives (a trip through the database, not the next instruction)."""
    deadline = time.monotonic() + 10
    resp = await post_batch(token, "sites", [site(1)])
    while resp.status == 200 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        resp = await post_batch(token, "sites", [site(1)])
    return resp


async def test_revoked_token_is_401_at_once(
    post_batch: PostBatch, customer_token: str, central_db: str
) -> None:
    """`customers revoke` ends the token as soon as its notification arrives (no TTL wait)."""
    assert (await post_batch(customer_token, "sites", [site(1)])).status == 200
    assert revoke_tokens(central_db, "DEV0001") == 1
    resp = await _until_refused(post_batch, customer_token)
    assert resp.status == 401
    assert await resp.json() == {"error": "unauthorized"}


async def test_rotated_token_keeps_working_for_grace_then_expires(
    post_batch: PostBatch, customer_token: str, central_db: str
) -> None:
    """After rotation both tokens work during the grace period; after it only the new one does."""
    new_token = rotate_token(central_db, "DEV0001", timedelta(hours=1))
    assert new_token != customer_token
    assert (await post_batch(customer_token, "sites", [site(1)])).status == 200
    assert (await post_batch(new_token, "sites", [site(1)])).status == 200
    with psycopg.connect(central_db) as conn:  # let the grace period run out
        conn.execute(
            "UPDATE fleet.customer_tokens SET expires_at = now() - interval '1 second' WHERE expires_at IS NOT NULL"
        )
    expired = await _until_refused(post_batch, customer_token)
    assert expired.status == 401
    assert await expired.json() == {"error": "unauthorized"}
    assert (await post_batch(new_token, "sites", [site(1)])).status == 200


async def test_only_hash_of_token_is_stored(customer_token: str, central_db: str) -> None:
    """The database holds the SHA-256 of the token, never the token itself."""
    import hashlib

    with psycopg.connect(central_db) as conn:
        hashes = [bytes(r[0]) for r in conn.execute("SELECT token_hash FROM fleet.customer_tokens")]
        dump = str(conn.execute("SELECT * FROM fleet.customer_tokens").fetchall())
    assert hashes == [hashlib.sha256(customer_token.encode()).digest()]
    assert customer_token not in dump


@pytest.mark.parametrize(
    ("headers", "gzip_body"),
    [
        ({"Content-Type": "text/plain"}, True),
        ({"Content-Type": "application/x-www-form-urlencoded"}, True),
        ({"Content-Encoding": "br"}, True),
        ({"Content-Encoding": "deflate"}, True),
    ],
)
async def test_unsupported_media_is_415(
    post_batch: PostBatch, customer_token: str, headers: dict[str, str], gzip_body: bool
) -> None:
    """Content types other than JSON and encodings other than gzip are a 415."""
    resp = await post_batch(
        customer_token, "measurements", measurements(1), headers=headers, gzip=gzip_body
    )
    assert resp.status == 415
    assert (await resp.json())["error"] == "unsupported_media_type"


async def test_plain_json_body_is_accepted(post_batch: PostBatch, customer_token: str) -> None:
    """Content-Encoding is optional: an identity body works too."""
    resp = await post_batch(customer_token, "measurements", measurements(3), gzip=False)
    assert resp.status == 200


async def test_long_cursor_is_400(post_batch: PostBatch, customer_token: str) -> None:
    """An X-Push-Cursor over 256 characters is refused."""
    resp = await post_batch(
        customer_token, "sites", [site(1)], headers={"X-Push-Cursor": "x" * 257}
    )
    assert resp.status == 400
    assert (await resp.json())["error"] == "invalid_cursor"


async def test_unknown_path_and_method(ingestd_client: TestClient[Any, Any]) -> None:
    """Unknown paths are a JSON 404; GET on the ingest endpoint is a JSON 405."""
    resp = await ingestd_client.get("/nope")
    assert resp.status == 404
    assert (await resp.json())["error"] == "not_found"
    resp = await ingestd_client.get(INGEST_PATH)
    assert resp.status == 405
    assert (await resp.json())["error"] == "method_not_allowed"


@pytest.fixture
async def small_client(aiohttp_client: Any, ingestd_settings: Settings) -> TestClient[Any, Any]:
    """An ingestd with small body limits (64 KiB on the wire, 256 KiB decompressed) and a 2/s rate limit."""
    from dataclasses import replace

    from aiohttp.test_utils import TestServer

    settings = replace(
        ingestd_settings,
        max_wire_bytes=64 * 1024,
        max_body_bytes=256 * 1024,
        rate_limit_per_s=0.5,
        rate_limit_burst=3,
    )
    server = TestServer(create_app(settings))
    await server.start_server(**SERVER_OPTIONS)
    client: TestClient[Any, Any] = await aiohttp_client(server)
    return client


def _headers(token: str, gz: bool = True) -> dict[str, str]:
    headers = {
        "X-Customer-Token": token,
        "X-Batch-Type": "measurements",
        "Content-Type": "application/json",
    }
    if gz:
        headers["Content-Encoding"] = "gzip"
    return headers


async def test_body_over_wire_limit_is_413(
    small_client: TestClient[Any, Any], customer_token: str
) -> None:
    """A body whose Content-Length passes the wire limit is refused before it is read."""
    body = encode(measurements(2000), gzip=False)
    resp = await small_client.post(
        INGEST_PATH, data=body, headers=_headers(customer_token, gz=False)
    )
    assert resp.status == 413
    data = await resp.json()
    assert data["error"] == "payload_too_large"
    assert data["max_bytes"] == 64 * 1024


async def test_chunked_body_over_limit_is_413(
    small_client: TestClient[Any, Any], customer_token: str
) -> None:
    """A chunked body (no Content-Length) is cut off as soon as it passes the limit."""
    body = encode(measurements(2000), gzip=False)

    async def chunks() -> Any:
        for start in range(0, len(body), 8192):
            yield body[start : start + 8192]

    resp = await small_client.post(
        INGEST_PATH, data=chunks(), headers=_headers(customer_token, gz=False)
    )
    assert resp.status == 413


async def test_gzip_bomb_is_413(small_client: TestClient[Any, Any], customer_token: str) -> None:
    """A small gzip body that inflates past the decompressed limit is a 413, without inflating it all."""
    inner = b'{"items": [' + b" " * (50 * 1024 * 1024) + b"]}"
    bomb = gzip.compress(inner, 9)
    assert len(bomb) < 64 * 1024
    resp = await small_client.post(INGEST_PATH, data=bomb, headers=_headers(customer_token))
    assert resp.status == 413
    assert (await resp.json())["max_bytes"] == 256 * 1024


async def test_rate_limit_is_429_with_retry_after(
    small_client: TestClient[Any, Any], customer_token: str
) -> None:
    """Past its burst a customer gets 429 with a Retry-After in seconds; other customers are not affected."""
    body = encode(measurements(1))
    statuses = []
    for _ in range(5):
        resp = await small_client.post(INGEST_PATH, data=body, headers=_headers(customer_token))
        statuses.append(resp.status)
        if resp.status == 429:
            assert int(resp.headers["Retry-After"]) >= 1
            assert (await resp.json())["error"] == "rate_limited"
    assert statuses[:3] == [200, 200, 200]
    assert 429 in statuses[3:]


async def test_rate_limit_is_per_customer(
    small_client: TestClient[Any, Any], customer_token: str, central_db: str
) -> None:
    """One customer's burst does not consume another customer's allowance."""
    other = add_customer(central_db, "DEV0009")
    body = encode(measurements(1))
    for _ in range(4):
        await small_client.post(INGEST_PATH, data=body, headers=_headers(customer_token))
    resp = await small_client.post(INGEST_PATH, data=body, headers=_headers(other))
    assert resp.status == 200


async def test_too_many_batches_in_flight_is_503_with_short_retry_after(
    aiohttp_client: Any, ingestd_settings: Settings, customer_token: str, central_db: str
) -> None:
    """Past INGESTD_MAX_INFLIGHT batches being stored, a received batch is shed after a short wait
    with 503 and the short busy Retry-After (spread at random above it); once the slot frees, batches are served again."""
    import asyncio
    from dataclasses import replace

    import psycopg
    from aiohttp.test_utils import TestServer

    settings = replace(ingestd_settings, max_inflight=1, inflight_wait_s=0.05, busy_retry_after_s=3)
    server = TestServer(create_app(settings))
    await server.start_server(**SERVER_OPTIONS)
    client: TestClient[Any, Any] = await aiohttp_client(server)
    headers = _headers(customer_token, gz=False)
    with psycopg.connect(central_db) as blocker:
        # The first batch takes the only slot, then waits on this row lock to mark the customer seen.
        blocker.execute("SELECT 1 FROM fleet.customers WHERE code = 'DEV0001' FOR UPDATE")
        holder = asyncio.create_task(
            client.post(INGEST_PATH, data=encode(measurements(20), gzip=False), headers=headers)
        )
        await asyncio.sleep(0.5)
        resp = await client.post(
            INGEST_PATH, data=encode(measurements(1), gzip=False), headers=headers
        )
        assert resp.status == 503
        assert 3 <= int(resp.headers["Retry-After"]) <= 3 + 3 * 2  # spread, see admission.py
        assert (await resp.json())["error"] == "unavailable"
        blocker.rollback()
    assert (await holder).status == 200
    resp = await client.post(INGEST_PATH, data=encode(measurements(1), gzip=False), headers=headers)
    assert resp.status == 200


async def test_a_herd_refused_for_capacity_is_told_to_come_back_one_after_another(
    aiohttp_client: Any, ingestd_settings: Settings, customer_token: str, central_db: str
) -> None:
    """Batches refused on arrival while the process is full get Retry-Afters booked in turn
    (the base first, then one further slot each, at INGESTD_BUSY_RETURN_SHARE of the capacity:
    here a quarter, one slot and nothing finishing, so 4 s apart), not all the same few seconds; /metrics shows the slot
    taken, the refusals by reason and how far ahead returns are booked; once the slot frees,
    batches are served again."""
    from dataclasses import replace

    from aiohttp.test_utils import TestServer

    settings = replace(
        ingestd_settings,
        max_inflight=1,
        max_waiting=0,
        inflight_wait_s=0.05,
        busy_retry_after_s=2,
        busy_return_share=0.25,
    )
    server = TestServer(create_app(settings))
    await server.start_server(**SERVER_OPTIONS)
    client: TestClient[Any, Any] = await aiohttp_client(server)
    headers = _headers(customer_token, gz=False)
    body = encode(measurements(1), gzip=False)
    with psycopg.connect(central_db) as blocker:
        # The first batch takes the only slot, then waits on this row lock to mark the customer seen.
        blocker.execute("SELECT 1 FROM fleet.customers WHERE code = 'DEV0001' FOR UPDATE")
        holder = asyncio.create_task(
            client.post(INGEST_PATH, data=encode(measurements(20), gzip=False), headers=headers)
        )
        await wait_for(
            lambda: bool(scalar(central_db, "SELECT count(*) FROM pg_stat_activity"
                                " WHERE wait_event_type = 'Lock' AND datname = current_database()")),
            what="the first batch holding the slot, waiting on the lock",
        )  # fmt: skip
        waits = []
        for _ in range(8):
            resp = await client.post(INGEST_PATH, data=body, headers=headers)
            assert resp.status == 503
            assert (await resp.json())["error"] == "unavailable"
            waits.append(int(resp.headers["Retry-After"]))
        page = await (await client.get("/metrics")).text()
        blocker.rollback()
    figures = _figures(page)
    assert figures["fleet_ingest_admission_slots_in_use"] == 1
    assert figures['fleet_ingest_admission_refusals_total{reason="line_full"}'] == 8
    assert figures['fleet_ingest_admission_refusals_total{reason="wait_timeout"}'] == 0
    assert waits[-1] - 5 <= figures["fleet_ingest_admission_booked_ahead_seconds"] <= waits[-1] + 5
    assert (await holder).status == 200
    assert waits[0] == 2
    assert all(b - a == 4 for a, b in pairwise(waits)), waits
    resp = await client.post(INGEST_PATH, data=encode(measurements(1), gzip=False), headers=headers)
    assert resp.status == 200


def _figures(page: str) -> dict[str, float]:
    """A Prometheus text page's samples by name and labels."""
    out = {}
    for line in page.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out
