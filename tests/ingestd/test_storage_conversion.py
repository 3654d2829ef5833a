"""Converting a populated database to the scaled layout online: under concurrent ingest,
interrupted and resumed, nothing lost, nothing duplicated, every value unchanged.

Rows stored before migration 0008 hold their values in the float8 columns (the migration only
renames the table and adds the integer columns); `ingestd convert-storage` rewrites them chunk
by chunk (partition by partition). Both storage paths; TimescaleDB with compressed chunks.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from fleetcore import MEASUREMENT_VALUE_FIELDS
from ingestd.storage.conversion import ConversionReport, convert_stored_rows, unconverted_rows
from ingestd.storage.partitions import ensure_partitions
from psycopg import AsyncConnection

from tests.fix_ingestd import PostBatch
from tests.samples import measurement

START = (datetime.now(UTC) - timedelta(days=3)).replace(minute=0, second=0, microsecond=0)

# Rows as an ingestd before migration 0008 stored them: every value in its float8 column. Most
# are whole steps at their field's resolution; v2 is finer (stays a double), thd_v is -0.0 once.
OLD_ROWS = f"""
INSERT INTO fleet.power_measurements_scaled (time, customer_id, device_id, received_at,
    {", ".join(MEASUREMENT_VALUE_FIELDS)})
SELECT t, %(customer)s, d, t + interval '2 s',
       round((230 + random())::numeric, 1), 230.123456 + d, round((231 + random())::numeric, 1),
       400.1, 400.2, 400.3, round((10 * random())::numeric, 3), 1.5, 1.25, 0.125,
       round((3 * random())::numeric, 3), 2.001, 2.002, 6.003, 1.5, 6.5, 0.95,
       round((50 + random() / 10)::numeric, 2),
       1000 + extract(epoch FROM t - %(start)s) / 300 * 0.5, 0, 20.1, 0,
       CASE WHEN d = 1 AND t = %(start)s THEN '-0'::float8 ELSE 1.25 END, 3.5
FROM generate_series(1, 4) AS d,
     generate_series(%(start)s::timestamptz, %(start)s::timestamptz + interval '3 days' - interval '5 minutes',
                     interval '5 minutes') AS t
"""
READ_BACK = (
    "SELECT device_id, time, "
    + ", ".join(f"float8send({f})" for f in MEASUREMENT_VALUE_FIELDS)
    + " FROM fleet.power_measurements WHERE device_id <= 4 ORDER BY device_id, time"
)


@pytest.fixture
def central_db(storage_db: str) -> str:
    """Both storage paths."""
    return storage_db


async def _populate(dsn: str) -> tuple[list[tuple[Any, ...]], bool]:
    """The old rows, compressed where TimescaleDB is; their values as read before converting."""
    async with await AsyncConnection.connect(dsn, autocommit=True) as conn:
        cur = await conn.execute("SELECT id FROM fleet.customers WHERE code = 'DEV0001'")
        (customer,) = await cur.fetchone() or (0,)
        timescale = bool(
            await (
                await conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'")
            ).fetchone()
        )
        if not timescale:
            await ensure_partitions(conn, [START + timedelta(days=d) for d in range(4)])
        await conn.execute(OLD_ROWS, {"customer": customer, "start": START})
        if timescale:
            await conn.execute(
                "SELECT compress_chunk(c, if_not_compressed => true) "
                "FROM show_chunks('fleet.power_measurements_scaled', older_than => now()) c"
            )
        rows = await (await conn.execute(READ_BACK)).fetchall()
    return rows, timescale


async def _ingest_until(
    post_batch: PostBatch, token: str, done: asyncio.Event, old_keys: list[tuple[int, datetime]]
) -> tuple[int, int]:
    """Batches of 20 new samples plus 5 re-sent old ones, one after another, until `done`;
    returns (batches, new rows sent)."""
    batches = 0
    now = datetime.now(UTC).replace(microsecond=0)
    while not done.is_set() and batches < 500:
        new = [measurement(100 + i, now + timedelta(seconds=batches)) for i in range(20)]
        resent = [measurement(d, t) for d, t in old_keys[batches * 5 % 100 :][:5]]
        resp = await post_batch(token, "measurements", new + resent)
        answer = await resp.json()
        assert resp.status == 200, answer
        assert (answer["accepted"], answer["duplicates"]) == (20, 5)
        batches += 1
        await asyncio.sleep(0)
    return batches, batches * 20


async def test_conversion_under_concurrent_ingest_is_lossless_and_resumable(
    post_batch: PostBatch, customer_token: str, central_db: str
) -> None:
    """A populated database is converted while batches keep arriving (new samples and re-sent
    old ones), stopped twice part-way (as a crash would) and resumed: afterwards no row is held
    only as float8 any more, every old value reads back bit-identical, finer values are still
    doubles, each key is stored once (0 lost, 0 duplicated), compressed chunks are compressed
    again, and a further run finds nothing to do."""
    before, timescale = await _populate(central_db)
    assert len(before) == 4 * 864
    old_keys = [(r[0], r[1]) for r in before[::30]][:100]  # re-sent: duplicates by key
    async with await AsyncConnection.connect(central_db, autocommit=True) as conn:
        assert await unconverted_rows(conn) == len(before)
    done = asyncio.Event()
    ingest = asyncio.create_task(_ingest_until(post_batch, customer_token, done, old_keys))
    reports: list[ConversionReport] = []
    try:
        async with await AsyncConnection.connect(central_db, autocommit=True) as conn:
            for max_slices in (3, 7, None):  # two interruptions, then to the end
                reports.append(
                    await convert_stored_rows(
                        conn,
                        compress_after=timedelta(hours=1),
                        slice_blocks=2,
                        max_slices=max_slices,
                    )
                )
            again = await convert_stored_rows(conn, compress_after=timedelta(hours=1))
            left = await unconverted_rows(conn)
    finally:
        done.set()
        batches, new_rows = await ingest
    assert [r.complete for r in reports] == [False, False, True]
    assert again.complete and again.rows == 0 and again.parts == []
    assert left == 0
    assert 0 < sum(r.rows for r in reports) <= len(before)  # slices of a stopped part: not counted
    with psycopg.connect(central_db) as conn:
        assert conn.execute(READ_BACK).fetchall() == before
        keys = conn.execute(
            "SELECT count(*), count(DISTINCT (device_id, time)) FROM fleet.power_measurements"
        ).fetchone()
        split = conn.execute(
            "SELECT count(*) FILTER (WHERE v2_scaled IS NULL AND v2 IS NOT NULL), "
            "count(*) FILTER (WHERE v1_scaled IS NOT NULL AND v1 IS NULL), "
            "count(*) FILTER (WHERE thd_v_scaled IS NULL AND thd_v = 0) "
            "FROM fleet.power_measurements_scaled WHERE device_id <= 4"
        ).fetchone()
        if timescale:
            uncompressed = conn.execute(
                """SELECT count(*) FROM timescaledb_information.chunks
                   WHERE hypertable_name = 'power_measurements_scaled' AND NOT is_compressed
                     AND range_end <= now() - interval '1 hour'"""
            ).fetchone()
            assert uncompressed == (0,)
    assert batches > 0
    assert keys == (len(before) + new_rows, len(before) + new_rows)
    assert split == (len(before), len(before), 1)


def test_convert_storage_command(
    central_db: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`ingestd convert-storage` converts, says how many rows in how long, and a second run
    finds every part done."""
    from ingestd.cli import main

    asyncio.run(_populate(central_db))
    monkeypatch.setenv("INGESTD_DATABASE_URL", central_db)
    assert main(["convert-storage", "--slice-blocks", "50"]) == 0
    first = capsys.readouterr().out.splitlines()
    assert first[-1].startswith(f"done: {4 * 864:,} rows converted in ")
    assert "min per 10 M rows" in first[-1]
    assert main(["convert-storage"]) == 0
    second = capsys.readouterr().out.splitlines()
    assert second[-1].startswith("done: 0 rows converted in 0 part(s), ")
    assert main(["convert-storage", "--slice-blocks", "0"]) == 2
