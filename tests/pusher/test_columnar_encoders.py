"""The pusher's two columnar encoders — the standard library's (gateways, no numpy) and numpy's
— make the same batch from the same records, and a pusher without numpy ships every row."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace

import psycopg
import pytest
from fleetcore import PushCursor
from fleetcore.protocol import WireFormat
from psycopg.rows import tuple_row
from pusher.errors import ConfigError, SourceError
from pusher.settings import Settings
from pusher.source.columns import (
    CHUNK_ROWS,
    READ_MEASUREMENT_COLUMNS,
    RECORD_SQL,
    columnar_encoder,
    read_record_chunks,
    read_records,
)
from pusher.source.columns_numpy import batch_from_records as with_numpy
from pusher.source.columns_stdlib import batch_from_records as with_stdlib
from pusher.source.cursor import SELECTION, selection_params
from pusher.source.records import RECORD

from tests.fix_customer import seed_inventory
from tests.fix_ingestd import central_count
from tests.fix_pg import wait_for
from tests.fix_pusher import running_pusher
from tests.pusher.test_uncarriable_rows import INSERT_ROW, UNCARRIABLE

# Meter readings with NULLs in some values, -0.0 and a value no decimal scale gives back.
SEED = """
INSERT INTO monitoring.power_measurements
    (device_id, time, received_at, v1, v2, i1, i2, pf_total, freq, energy_imp_kwh)
SELECT 1 + s %% 5, timestamptz '2026-11-01 00:00+00' + make_interval(secs => s / 5 * 60),
       timestamptz '2026-11-01 00:00:02+00' + make_interval(secs => s / 5 * 60),
       round((230 + random() * 4)::numeric, 1), CASE WHEN s %% 7 = 0 THEN NULL ELSE 231.5 END,
       round((12 + random())::numeric, 2), CASE WHEN s %% 11 = 0 THEN NULL ELSE 12.25 END,
       CASE WHEN s %% 13 = 0 THEN '-0'::float8 ELSE 0.981 END, 50.01 + s * 1e-9,
       1000 + s * 0.1
FROM generate_series(0, %(rows)s - 1) AS s
"""


def _records(dsn: str, after: PushCursor, limit: int) -> tuple[bytes, int]:
    params = {"xid": str(after.xid), "device_id": after.device_id, "time": after.time,
              "limit": limit}  # fmt: skip
    with psycopg.connect(dsn) as conn, conn.cursor(row_factory=tuple_row, binary=True) as cur:
        cur.execute(READ_MEASUREMENT_COLUMNS, params)
        chunks = cur.fetchall()
    return b"".join(bytes(c[1]) for c in chunks), sum(int(c[0]) for c in chunks)


@pytest.mark.parametrize("rows", [7, 300, 2000])
def test_both_encoders_make_the_same_batch(customer_db: str, rows: int) -> None:
    """From the same records — NULLs, -0.0, a column with no decimal scale, uncarriable times
    among them — both give the same body byte for byte, the same end cursor, newest time, first
    row and counts, small batches (bit-packed) and large (byte-shuffled) alike."""
    seed_inventory(customer_db, devices=5)
    with psycopg.connect(customer_db, autocommit=True) as conn:
        conn.execute(SEED, {"rows": rows})
        for n, (when, received_at) in enumerate(UNCARRIABLE[:4]):
            conn.execute(
                INSERT_ROW, {"device": 3, "time": when, "received_at": received_at, "n": n}
            )
    after = PushCursor.start()
    data, count = _records(customer_db, after, rows + 10)
    assert count == rows + 4
    plain, fast = (
        with_stdlib(data, count, after, rows + 10),
        with_numpy(data, count, after, rows + 10),
    )
    assert plain == fast
    assert plain.sent == rows and plain.format is WireFormat.COLUMNAR


def test_rows_from_many_transactions_are_reordered_alike(customer_db: str) -> None:
    """Rows written a tick at a time (one transaction per minute of all meters, as a meter stack
    writes them: cursor order is not meter order) are reordered meter by meter in both encoders
    to the same body, a batch whose last slice of rows is a single row included."""
    seed_inventory(customer_db, devices=5)
    with psycopg.connect(customer_db, autocommit=True) as conn:
        for minute in range(206):  # 1,030 rows; the batch below takes 1,025 = STEP + 1
            conn.execute(
                "INSERT INTO monitoring.power_measurements (device_id, time, received_at, v1, i1)"
                " SELECT d, timestamptz '2026-11-01 00:00+00' + make_interval(mins => %(m)s),"
                " now(), 230 + d * 0.1 + %(m)s * 0.01, CASE WHEN d = 2 THEN NULL ELSE 12.5 END"
                " FROM generate_series(5, 1, -1) AS d",
                {"m": minute},
            )
    after = PushCursor.start()
    data, count = _records(customer_db, after, 1025)
    plain, fast = with_stdlib(data, count, after, 1025), with_numpy(data, count, after, 1025)
    assert plain == fast
    assert plain.sent == 1025


async def test_records_stream_in_chunks_in_cursor_order(customer_db: str) -> None:
    """A batch of several chunks comes back whole — `limit` records, each once, in cursor order,
    the bytes of the same rows selected one by one — and the next batch holds the rest."""
    seed_inventory(customer_db, devices=5)
    total, limit = 2 * CHUNK_ROWS + 234, 2 * CHUNK_ROWS + 100
    with psycopg.connect(customer_db, autocommit=True) as conn:
        conn.execute(SEED, {"rows": total})
        one_by_one = conn.execute(
            f"SELECT {RECORD_SQL} {SELECTION}", selection_params(PushCursor.start(), total)
        ).fetchall()
    async with await psycopg.AsyncConnection.connect(customer_db, autocommit=True) as conn:
        data, count = await read_records(conn, PushCursor.start(), limit)
        end = with_stdlib(data, count, PushCursor.start(), limit).end
        rest, rest_count = await read_records(conn, end, limit)
        after_all = await read_records(conn, with_stdlib(rest, rest_count, end, limit).end, limit)
    keys = [RECORD.unpack_from(data + rest, i * RECORD.size)[:3] for i in range(total)]
    assert (count, rest_count, after_all) == (limit, total - limit, (bytearray(), 0))
    assert keys == sorted(set(keys))
    assert data + rest == b"".join(row[0] for row in one_by_one)


async def test_records_read_in_chunks_are_parsed_chunk_by_chunk(customer_db: str) -> None:
    """The records as read (a list of chunks, each dropped from the list once parsed) give both
    encoders the batch that the same records in one buffer give; a chunk cut inside a record is
    refused."""
    seed_inventory(customer_db, devices=5)
    with psycopg.connect(customer_db, autocommit=True) as conn:
        conn.execute(SEED, {"rows": 2 * CHUNK_ROWS + 77})
    limit = 2 * CHUNK_ROWS + 50
    async with await psycopg.AsyncConnection.connect(customer_db, autocommit=True) as conn:
        chunks, count = await read_record_chunks(conn, PushCursor.start(), limit)
    assert len(chunks) == 3 and count == limit
    whole = b"".join(chunks)
    for build in (with_stdlib, with_numpy):
        taken = list(chunks)
        assert build(taken, count, PushCursor.start(), limit) == build(
            whole, count, PushCursor.start(), limit
        )
        assert taken == []
    cut = [whole[: RECORD.size + 1], whole[RECORD.size + 1 :]]
    with pytest.raises(SourceError, match="bytes of records"):
        with_stdlib(cut, count, PushCursor.start(), limit)


def test_the_encoder_is_a_setting() -> None:
    """PUSHER_COLUMNAR_ENCODER picks one ("auto" is numpy where installed); an unknown name, or
    numpy where it cannot be imported, is a configuration error naming the variable."""
    base = {"PUSHER_DATABASE_URL": "postgresql://gateway/meters"}
    assert Settings.from_env(base).columnar_encoder == "auto"
    assert (
        Settings.from_env({**base, "PUSHER_COLUMNAR_ENCODER": "stdlib"}).columnar_encoder
        == "stdlib"
    )
    assert columnar_encoder("stdlib") is with_stdlib and columnar_encoder("numpy") is with_numpy
    assert columnar_encoder("auto") is with_numpy  # numpy is in the test environment
    with pytest.raises(ConfigError, match="PUSHER_COLUMNAR_ENCODER"):
        Settings.from_env({**base, "PUSHER_COLUMNAR_ENCODER": "fortran"})
    code = (
        "import sys; sys.modules['numpy'] = None\n"
        "from pusher.settings import Settings\nfrom pusher.errors import ConfigError, SourceError\n"
        "from pusher.source.columns import columnar_encoder\n"
        "env = {'PUSHER_DATABASE_URL': 'postgresql://gateway/meters'}\n"
        "assert columnar_encoder('auto').__module__ == 'pusher.source.columns_stdlib'\n"
        "try:\n    Settings.from_env({**env, 'PUSHER_COLUMNAR_ENCODER': 'numpy'})\n"
        "except ConfigError as exc:\n    print(exc)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "PUSHER_COLUMNAR_ENCODER=numpy but numpy is not installed" in done.stdout


async def test_a_pusher_on_the_standard_library_ships_every_row_once(
    pusher_settings: Settings, customer_db: str, central_db: str
) -> None:
    """With the standard-library encoder, a backlog of several batches (NULLs and -0.0 among
    the values) arrives columnar, every row once."""
    seed_inventory(customer_db, devices=5)
    with psycopg.connect(customer_db, autocommit=True) as conn:
        conn.execute(SEED, {"rows": 2500})
    settings = replace(pusher_settings, columnar_encoder="stdlib", batch_size=1000)
    async with running_pusher(settings):
        await wait_for(lambda: central_count(central_db) == 2500, what="all rows")
    assert central_count(central_db) == 2500
