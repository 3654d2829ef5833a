"""`ingestd.pooled`: the pool's connections stay in autocommit; a block that needs a transaction
gets one, committed at its end, rolled back when it raises, autocommit on again afterwards."""

from __future__ import annotations

import psycopg
import pytest
from ingestd.pooled import PooledConnection, pooled_transaction, transaction
from psycopg import AsyncConnection
from psycopg.pq import TransactionStatus
from psycopg_pool import AsyncConnectionPool

CREATE = "CREATE TABLE public.pooled_probe (n integer PRIMARY KEY)"
INSERT = "INSERT INTO public.pooled_probe VALUES (%s)"
COUNT = "SELECT count(*) FROM public.pooled_probe"


async def _count(dsn: str) -> int:
    async with await AsyncConnection.connect(dsn, autocommit=True) as other:
        cur = await other.execute(COUNT)
        row = await cur.fetchone()
        assert row is not None
        return int(row[0])


async def test_a_block_is_one_transaction_committed_at_its_end(central_db: str) -> None:
    async with await AsyncConnection.connect(central_db, autocommit=True) as conn:
        await conn.execute(CREATE)
        async with transaction(conn):
            assert not conn.autocommit
            await conn.execute(INSERT, (1,))
            await conn.execute(INSERT, (2,))
            assert conn.info.transaction_status is TransactionStatus.INTRANS
            assert await _count(central_db) == 0  # not committed inside the block
        assert conn.autocommit
        assert conn.info.transaction_status is TransactionStatus.IDLE
        assert await _count(central_db) == 2


async def test_a_block_that_raises_stores_nothing(central_db: str) -> None:
    async with await AsyncConnection.connect(central_db, autocommit=True) as conn:
        await conn.execute(CREATE)
        with pytest.raises(psycopg.errors.UniqueViolation):
            async with transaction(conn):
                await conn.execute(INSERT, (1,))
                await conn.execute(INSERT, (1,))
        assert conn.autocommit
        assert conn.info.transaction_status is TransactionStatus.IDLE
        assert await _count(central_db) == 0
        with pytest.raises(RuntimeError):
            async with transaction(conn):
                await conn.execute(INSERT, (3,))
                raise RuntimeError("the block's own error")
        assert conn.autocommit
        assert await _count(central_db) == 0


async def test_explicit_commit_and_rollback_inside_a_block(central_db: str) -> None:
    async with await AsyncConnection.connect(central_db, autocommit=True) as conn:
        await conn.execute(CREATE)
        async with transaction(conn):
            await conn.execute(INSERT, (1,))
            await conn.commit()
            await conn.execute(INSERT, (2,))
            await conn.rollback()
        assert conn.autocommit
        assert await _count(central_db) == 1


async def test_a_connection_not_in_autocommit_keeps_its_implicit_transaction(
    central_db: str,
) -> None:
    async with await AsyncConnection.connect(central_db) as conn:
        await conn.execute(CREATE)
        await conn.commit()
        async with transaction(conn):
            await conn.execute(INSERT, (1,))
        # the caller's (the pool's context's) commit, as before
        assert conn.info.transaction_status is TransactionStatus.INTRANS
        assert not conn.autocommit
        await conn.commit()
        assert await _count(central_db) == 1


async def test_pooled_transaction_returns_the_connection_in_autocommit(central_db: str) -> None:
    async with AsyncConnectionPool(
        central_db, min_size=1, max_size=1, kwargs={"autocommit": True}, open=False
    ) as pool:
        await pool.open(wait=True)
        async with pool.connection() as conn:
            await conn.execute(CREATE)
        async with pooled_transaction(pool, 5.0) as conn:
            await conn.execute(INSERT, (1,))
            assert conn.info.transaction_status is TransactionStatus.INTRANS
        async with pool.connection() as conn:
            assert conn.autocommit
            await conn.execute(INSERT, (2,))
            assert conn.info.transaction_status is TransactionStatus.IDLE  # committed already
        assert await _count(central_db) == 2


async def test_a_pooled_connection_keeps_one_cursor(central_db: str) -> None:
    async with await PooledConnection.connect(central_db, autocommit=True) as conn:
        cur = conn.kept_cursor()
        assert conn.kept_cursor() is cur
        for n in (1, 2):  # one statement after another, each result read before the next
            await cur.execute("SELECT %s::integer + 1", (n,))
            assert await cur.fetchone() == (n + 1,)
        await cur.close()
        again = conn.kept_cursor()
        assert again is not cur and not again.closed
