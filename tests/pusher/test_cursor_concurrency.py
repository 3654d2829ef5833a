"""The measurement cursor under concurrent writers: nothing lost, nothing read twice."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from datetime import datetime, timedelta

import msgspec
import psycopg
from fleetcore import PushCursor
from pusher import source

from tests.fix_customer import BASE_TIME

WRITERS = 8
WRITE_SECONDS = 7.0
INSERT = "INSERT INTO monitoring.power_measurements (device_id, time, v1) VALUES (%s, %s, 1.0)"

NAIVE_READ = """
SELECT device_id, time, received_at FROM monitoring.power_measurements
WHERE received_at > %s ORDER BY received_at LIMIT 50
"""

Key = tuple[int, datetime]


async def _writer(dsn: str, writer: int, deadline: float, committed: set[Key]) -> None:
    """Transactions of 1-40 rows held open 0-1.5 s (one of them 4 s), a fifth rolled back,
    and some rows inserted in a savepoint that is rolled back while the rest commits."""
    rng = random.Random(writer)
    seq = 0
    long_done = False
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        while time.monotonic() < deadline:
            keys: list[Key] = []
            async with conn.transaction(force_rollback=rng.random() < 0.2) as tx:
                for _ in range(rng.randint(1, 40)):
                    seq += 1
                    key = (writer, BASE_TIME + timedelta(seconds=seq))
                    await conn.execute(INSERT, key)
                    keys.append(key)
                if rng.random() < 0.2:
                    with_savepoint = conn.transaction()
                    try:
                        async with with_savepoint:
                            seq += 1
                            await conn.execute(INSERT, (writer, BASE_TIME + timedelta(seconds=seq)))
                            raise psycopg.Rollback(with_savepoint)
                    except psycopg.Rollback:
                        pass
                hold = 4.0 if writer == 0 and not long_done else rng.uniform(0, 1.5)
                long_done = True
                await asyncio.sleep(hold)
                rolled_back = tx.force_rollback
            if not rolled_back:
                committed.update(keys)


def _keys(batch: source.MeasurementBatch) -> list[Key]:
    items = msgspec.json.decode(batch.body)["items"]
    return [(row["device_id"], datetime.fromisoformat(row["time"])) for row in items]


async def test_cursor_reads_every_committed_row_exactly_once(customer_db: str) -> None:
    """With 8 writers holding transactions open 0-4 s, committing late, rolling back and using
    savepoints, a reader polling the cursor meanwhile reads each committed row once and no other
    (while a `received_at > cursor` reader polling alongside loses rows)."""
    committed: set[Key] = set()
    read: list[Key] = []
    deadline = time.monotonic() + WRITE_SECONDS
    writers = [
        asyncio.create_task(_writer(customer_db, w, deadline, committed)) for w in range(WRITERS)
    ]
    naive_read: set[Key] = set()
    naive_cursor = BASE_TIME - timedelta(days=1)
    cursor = PushCursor.start()
    polls = 0
    async with await source.connect(customer_db) as conn:
        while not all(w.done() for w in writers) and polls < 10_000:
            polls += 1
            batch = await source.read_measurements(conn, cursor, 50)
            read.extend(_keys(batch))
            cursor = batch.end
            rows = await (await conn.execute(NAIVE_READ, (naive_cursor,))).fetchall()
            naive_read.update((device_id, when) for device_id, when, _ in rows)
            naive_cursor = rows[-1][2] if rows else naive_cursor
            await asyncio.sleep(0.01)
        await asyncio.gather(*writers)
        for _ in range(1000):
            batch = await source.read_measurements(conn, cursor, 500)
            read.extend(_keys(batch))
            cursor = batch.end
            if batch.count == 0:
                break

    twice = [key for key, n in Counter(read).items() if n > 1]
    # Enough traffic to mean something (about 1,200 rows are expected; the writers mostly sleep,
    # so the count varies with scheduling, not with the cursor under test).
    assert len(committed) > 500
    assert polls > 100
    # The obvious received_at cursor, polled alongside, does lose rows: the test can tell.
    assert len(committed - naive_read) > 0
    assert twice == []
    assert set(read) - committed == set()
    assert committed - set(read) == set()
