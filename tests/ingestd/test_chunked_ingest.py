"""A large JSON measurement batch is stored as it is decoded, chunk by chunk: the same rows and
bits as any other way, and anything a chunk does not take whole goes the whole-batch way."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import ingestd.ingest
import msgspec
import psycopg
import pytest
from fleetcore import MEASUREMENT_VALUE_FIELDS
from fleetcore.json_columns import chunk_body, item_spans
from ingestd.decoding import chunk_schedule

from tests.fix_ingestd import PostBatch
from tests.fix_pg import scalar
from tests.ingestd.test_columnar_ingest import COLUMNAR, columnar, stored
from tests.samples import NOW, measurements

ROWS = 4000  # ~1.8 MB of JSON: three chunks, of 800, 1,600 and 1,600 rows


@pytest.fixture
def central_db(storage_db: str) -> str:
    """Both storage paths: the plain one makes partitions as chunks reach new weeks."""
    return storage_db


def large_batch() -> list[dict[str, Any]]:
    """Rows with nulls, values finer than their resolution and extremes, spread over chunks."""
    items = measurements(ROWS, devices=40)
    extremes = [-0.0, 5e-324, 1e15, -1e15, 0.1, 1 / 3, None]
    for i, item in enumerate(items):
        item["thd_i"] = extremes[i % len(extremes)]
        item["v2"] = None if i % 5 == 0 else item["v2"] + i / 1000
    for name in MEASUREMENT_VALUE_FIELDS[3:]:
        items[ROWS - 2][name] = None  # a row with most values null, in the last chunk
    return items


def whole_batches(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the batches the chunked way hands to the whole-batch way."""
    calls: list[int] = []
    whole = ingestd.ingest.ingest_batch

    async def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return await whole(*args, **kwargs)

    monkeypatch.setattr(ingestd.ingest, "ingest_batch", counted)
    return calls


def chunks_of(items: list[dict[str, Any]]) -> int:
    body = msgspec.json.encode({"items": items})
    spans = item_spans(body, *chunk_schedule(len(body)))
    return len(spans) if spans else 0


async def test_a_large_batch_stored_in_chunks_is_stored_bit_for_bit_as_columnar(
    post_batch: PostBatch,
    customer_token: str,
    other_token: str,
    central_db: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A JSON batch cut into chunks is stored chunk by chunk with the same rows and bits as the
    same rows sent columnar; its re-delivery goes the whole way and is all duplicates."""
    items = large_batch()
    assert chunks_of(items) >= 2
    whole = whole_batches(monkeypatch)
    json_resp = await post_batch(customer_token, "measurements", items)
    assert whole == []
    col_resp = await post_batch(
        other_token, "measurements", body=columnar(items), gzip=False, headers=COLUMNAR
    )
    assert json_resp.status == col_resp.status == 200
    assert (await json_resp.json())["accepted"] == ROWS
    assert stored(central_db, "DEV0001") == stored(central_db, "DEV0002")
    again = await post_batch(customer_token, "measurements", items)
    answer = await again.json()
    assert (answer["accepted"], answer["duplicates"]) == (0, ROWS)
    assert whole == [1]


async def test_chunks_of_other_columns_are_stored_by_a_copy_of_their_own(
    post_batch: PostBatch,
    customer_token: str,
    other_token: str,
    central_db: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A column null in every row of the first chunk (left out of its COPY) and present later,
    and a value finer than its resolution in the last chunk only (its exact-double column
    appears there): the batch is still streamed, each run of chunks of one set of columns by a
    COPY of its own, and stored bit for bit as the same rows sent columnar."""
    items = measurements(ROWS, devices=40)
    assert chunks_of(items) >= 2
    for item in items[: ROWS // 2]:  # the first chunk's rows and some of the next
        item["thd_v"] = None
    items[ROWS - 3]["v1"] = 230.123
    whole = whole_batches(monkeypatch)
    json_resp = await post_batch(customer_token, "measurements", items)
    assert json_resp.status == 200 and whole == []
    assert (await json_resp.json())["accepted"] == ROWS
    col_resp = await post_batch(
        other_token, "measurements", body=columnar(items), gzip=False, headers=COLUMNAR
    )
    assert col_resp.status == 200
    assert stored(central_db, "DEV0001") == stored(central_db, "DEV0002")


async def test_a_refused_row_in_a_later_chunk_is_dead_lettered_and_the_rest_stored(
    post_batch: PostBatch, customer_token: str, central_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One bad row in the last chunk: the answer and fleet.rejected_rows name it, every other
    row is stored once (the chunks already sent are not kept twice)."""
    items = large_batch()
    items[ROWS - 10]["v1"] = "high"
    whole = whole_batches(monkeypatch)
    resp = await post_batch(customer_token, "measurements", items)
    assert resp.status == 200 and whole == [1]
    answer = await resp.json()
    assert (answer["accepted"], answer["rejected"]) == (ROWS - 1, 1)
    assert answer["errors"][0]["index"] == ROWS - 10
    assert len(stored(central_db, "DEV0001")) == ROWS - 1
    with psycopg.connect(central_db) as conn:
        rows = conn.execute("SELECT row_index, payload FROM fleet.rejected_rows").fetchall()
    assert [r[0] for r in rows] == [ROWS - 10] and '"high"' in rows[0][1]


async def test_a_batch_partly_stored_already_rolls_back_and_goes_whole(
    post_batch: PostBatch, customer_token: str, central_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A row in the middle of a large batch stored before (the probe of the batch's ends does not
    see it): the chunks COPYed until the unique violation are rolled back, and the whole-batch
    way stores every other row once, with the one duplicate counted, audit row and all."""
    items = large_batch()
    first = await post_batch(customer_token, "measurements", [items[ROWS // 2]])
    assert (await first.json())["accepted"] == 1
    whole = whole_batches(monkeypatch)
    resp = await post_batch(customer_token, "measurements", items)
    answer = await resp.json()
    assert resp.status == 200 and whole == [1]
    assert (answer["accepted"], answer["duplicates"]) == (ROWS - 1, 1)
    assert len(stored(central_db, "DEV0001")) == ROWS
    events = "SELECT count(*) FROM fleet.ingest_events WHERE accepted = %s AND duplicates = 1"
    assert scalar(central_db, events, (ROWS - 1,)) == 1


async def test_a_streamed_batch_commits_its_audit_row_and_dirty_marks(
    post_batch: PostBatch, customer_token: str, central_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rows, the batch's audit row (count and time range) and the dirty marks of its
    device-hours are committed together, in one round trip after the COPY."""
    items = large_batch()
    whole = whole_batches(monkeypatch)
    resp = await post_batch(customer_token, "measurements", items)
    assert resp.status == 200 and whole == []
    event = scalar(
        central_db,
        "SELECT (accepted, duplicates, min_time = %s, max_time = %s)::text "
        "FROM fleet.ingest_events WHERE batch_type = 'measurements'",
        (min(i["time"] for i in items), max(i["time"] for i in items)),
    )
    assert event == f"({ROWS},0,t,t)"
    hours = {(i["device_id"], i["time"][:13]) for i in items}
    marks = scalar(
        central_db,
        "SELECT count(*) FROM fleet.hourly_dirty WHERE customer_id = "
        "(SELECT id FROM fleet.customers WHERE code = 'DEV0001')",
    )
    assert marks >= len(hours)


async def test_a_chunk_reaching_a_week_without_its_partition_goes_whole(
    post_batch: PostBatch, customer_token: str, central_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows of three weeks, the middle week's in neither the first nor the last row: the plain
    path makes the partitions of the batch's first and last rows before the COPY, and a chunk of
    the other week sends the batch the whole way, which makes its partition and stores every
    row; TimescaleDB needs no partitions and streams it."""
    items = []
    for week in range(3):
        start = NOW - timedelta(days=30 - 7 * week)
        items += measurements(ROWS // 3, devices=40, start=start)
    whole = whole_batches(monkeypatch)
    resp = await post_batch(customer_token, "measurements", items)
    assert resp.status == 200 and (await resp.json())["accepted"] == len(items)
    timescale = scalar(
        central_db, "SELECT count(*) FROM pg_extension WHERE extname = 'timescaledb'"
    )
    assert whole == ([] if timescale else [1])
    assert len(stored(central_db, "DEV0001")) == len(items)


def _cut_items(body: bytes, parts: int) -> list[Any] | None:
    """The items of every chunk of the cut, or None when one does not decode."""
    size = len(body) // parts
    spans = item_spans(body, size, size)
    assert spans is not None
    try:
        pieces = [msgspec.json.decode(chunk_body(body, span))["items"] for span in spans]
    except msgspec.DecodeError:
        return None
    return [item for piece in pieces for item in piece]


def test_items_are_cut_only_between_items() -> None:
    """Chunks that all decode hold the body's items in order, whatever `},{` a string holds;
    a body the cut cannot be sure of (another array, an escape) is not cut."""
    items = measurements(300)
    body = msgspec.json.encode({"items": items})
    assert _cut_items(body, 4) == items
    quoted_items = [{**item, "note": "},{"} if i % 7 == 0 else item for i, item in enumerate(items)]
    quoted = msgspec.json.encode({"items": quoted_items})
    outcomes = [_cut_items(quoted, parts) for parts in range(2, 80)]
    assert all(got in (None, quoted_items) for got in outcomes)
    assert None in outcomes and quoted_items in outcomes
    nested = msgspec.json.encode({"items": [{**items[0], "x": [{"a": 1}, {"b": 2}]}, *items]})
    after = body[:-1] + b',"x":[{},{}]}'
    escaped = body.replace(b'"v1"', b'"v\\u0031"', 1)
    assert item_spans(nested, 999, 999) is None and item_spans(after, 999, 999) is None
    assert item_spans(escaped, 999, 999) is None
