"""What one request may cost ingestd, as a client observes it: compressed members, rows, refused
rows, the memory budget, the decoding deadline and one customer's concurrent requests."""

from __future__ import annotations

import asyncio
import gzip
import socket
from dataclasses import replace
from typing import Any

import psycopg
import pytest
from aiohttp.test_utils import TestClient, TestServer
from fleetcore import MAX_BATCH_ROWS, MAX_BODY_MEMBERS, MAX_REJECTED_ROWS, zstd_compress
from ingestd.app import INGEST_PATH, SERVER_OPTIONS, create_app
from ingestd.settings import Settings

from tests.fix_ingestd import PostBatch, gzip_json_headers
from tests.samples import encode, measurements, site

EMPTY_GZIP = gzip.compress(b"", mtime=0)


def _dead_letters(central_db: str) -> int:
    with psycopg.connect(central_db) as conn:
        row = conn.execute("SELECT count(*) FROM fleet.rejected_rows").fetchone()
    assert row is not None
    return int(row[0])


async def test_gzip_members_past_the_limit_are_400(
    post_batch: PostBatch, customer_token: str
) -> None:
    """A gzip body of more than MAX_BODY_MEMBERS members is a 400 too_many_members at once
    (at the wire limit such a body took minutes); up to the limit it is taken."""
    good = gzip.compress(encode([site(1)], gzip=False))
    resp = await post_batch(customer_token, "sites", body=good + EMPTY_GZIP * 20_000)
    assert resp.status == 400
    assert (await resp.json())["error"] == "too_many_members"
    resp = await post_batch(
        customer_token, "sites", body=good + EMPTY_GZIP * (MAX_BODY_MEMBERS - 1)
    )
    assert resp.status == 200


async def test_zstd_frames_past_the_limit_are_400(
    post_batch: PostBatch, customer_token: str
) -> None:
    """The same for zstd frames."""
    good = zstd_compress(encode([site(1)], gzip=False))
    headers = {"Content-Encoding": "zstd"}
    body = good + zstd_compress(b"") * 20_000
    resp = await post_batch(customer_token, "sites", body=body, gzip=False, headers=headers)
    assert resp.status == 400
    assert (await resp.json())["error"] == "too_many_members"


async def test_tiny_items_past_the_row_cap_are_413_and_nothing_is_dead_lettered(
    post_batch: PostBatch, customer_token: str, central_db: str
) -> None:
    """`{"items":[{},{},…]}` past MAX_BATCH_ROWS (a 1 KB gzip body) is a 413 too_many_rows with
    the limit: no rejections written (it used to write one dead letter per item)."""
    body = gzip.compress(b'{"items":[' + b",".join([b"{}"] * 300_000) + b"]}")
    resp = await post_batch(customer_token, "measurements", body=body)
    assert resp.status == 413
    answer = await resp.json()
    assert answer["error"] == "too_many_rows" and answer["max_rows"] == MAX_BATCH_ROWS
    assert _dead_letters(central_db) == 0


async def test_too_many_refused_rows_refuse_the_batch_whole(
    post_batch: PostBatch, customer_token: str, central_db: str
) -> None:
    """More than MAX_REJECTED_ROWS invalid rows: 413 too_many_rejections, nothing stored, no
    dead letters; the pusher halves such a batch."""
    items = [{"device_id": i} for i in range(MAX_REJECTED_ROWS + 1)] + measurements(5)
    resp = await post_batch(customer_token, "measurements", items)
    assert resp.status == 413
    answer = await resp.json()
    assert answer["error"] == "too_many_rejections"
    assert answer["max_rejections"] == MAX_REJECTED_ROWS
    assert _dead_letters(central_db) == 0


async def test_a_time_utc_cannot_hold_is_a_refused_row(
    post_batch: PostBatch, customer_token: str, central_db: str
) -> None:
    """A site whose updated_at is 0001-01-01T00:30:00+01:00 (year 0 in UTC) is a refused row of
    a 200, never a 500 (the pusher would re-send that full set forever)."""
    items = [site(1), site(2, updated_at="0001-01-01T00:30:00+01:00")]
    resp = await post_batch(customer_token, "sites", items)
    assert resp.status == 200
    answer = await resp.json()
    assert (answer["accepted"], answer["rejected"]) == (1, 1)
    assert "outside years 1-9999" in answer["errors"][0]["reason"]


@pytest.fixture
async def tight_client(
    aiohttp_client: Any, ingestd_settings: Settings, request: pytest.FixtureRequest
) -> TestClient[Any, Any]:
    """An ingestd with the settings the test's parameter overrides."""
    settings = replace(ingestd_settings, **request.param)
    server = TestServer(create_app(settings))
    await server.start_server(**SERVER_OPTIONS)
    client: TestClient[Any, Any] = await aiohttp_client(server)
    return client


@pytest.mark.parametrize("tight_client", [{"memory_budget_bytes": 6 * 1024 * 1024}], indirect=True)
async def test_a_body_the_memory_budget_cannot_hold_is_503(
    tight_client: TestClient[Any, Any], customer_token: str
) -> None:
    """A body whose bytes the memory budget cannot give is refused 503 with Retry-After before
    they are held (here: a 2 MB body inflating to 20 MB in a 6 MiB budget); a small one passes."""
    body = gzip.compress(b'{"items":[' + b" " * (20 * 1024 * 1024) + b"]}")
    resp = await tight_client.post(
        INGEST_PATH, data=body, headers=gzip_json_headers(customer_token, "measurements")
    )
    assert resp.status == 503
    assert int(resp.headers["Retry-After"]) >= 1
    assert "memory budget" in (await resp.json())["detail"]
    resp = await tight_client.post(
        INGEST_PATH,
        data=encode(measurements(3)),
        headers=gzip_json_headers(customer_token, "measurements"),
    )
    assert resp.status == 200


@pytest.mark.parametrize("tight_client", [{"decode_budget_s": 0.0}], indirect=True)
async def test_decoding_past_its_deadline_is_503(
    tight_client: TestClient[Any, Any], customer_token: str
) -> None:
    """A body still decoding at INGESTD_DECODE_BUDGET_S is answered 503 with Retry-After."""
    resp = await tight_client.post(
        INGEST_PATH,
        data=encode(measurements(3)),
        headers=gzip_json_headers(customer_token, "measurements"),
    )
    assert resp.status == 503
    assert "took longer" in (await resp.json())["detail"]


@pytest.mark.parametrize("tight_client", [{"max_inflight_per_customer": 1}], indirect=True)
async def test_one_customer_cannot_take_every_slot(
    tight_client: TestClient[Any, Any], customer_token: str, other_token: str
) -> None:
    """A customer with INGESTD_MAX_INFLIGHT_PER_CUSTOMER requests in progress gets 429 with
    Retry-After for the next; another customer is served meanwhile."""
    host, port = tight_client.server.host, tight_client.server.port
    head = (
        f"POST {INGEST_PATH} HTTP/1.1\r\nHost: x\r\nX-Customer-Token: {customer_token}\r\n"
        "X-Batch-Type: measurements\r\nContent-Type: application/json\r\n"
        "Content-Length: 1000\r\n\r\n{"
    ).encode()
    holder = await asyncio.to_thread(socket.create_connection, (host, port), 5)
    try:
        holder.sendall(head)  # the body never completes: this request stays in progress
        resp = None
        for _ in range(50):  # bounded wait until the holder is counted
            resp = await tight_client.post(
                INGEST_PATH,
                data=encode(measurements(1)),
                headers=gzip_json_headers(customer_token, "measurements"),
            )
            if resp.status == 429:
                break
            await asyncio.sleep(0.1)
        assert resp is not None and resp.status == 429
        assert int(resp.headers["Retry-After"]) >= 1
        resp = await tight_client.post(
            INGEST_PATH,
            data=encode(measurements(1)),
            headers=gzip_json_headers(other_token, "measurements"),
        )
        assert resp.status == 200
    finally:
        holder.close()
