"""Transactions on the pool's connections, which stay in autocommit between uses.

The busiest use of a pooled connection is a small measurement batch: one statement (rows, dirty
marks, audit row), one round trip in autocommit. The pool's connections are opened in autocommit
(`app`'s pool) so that statement needs no switching — turning autocommit on and off around it
took two of psycopg's locked waits, ~70 µs of a batch's CPU inside a running ingestd (bench/
README.md, issue 26's fifth pass). What needs a transaction (several statements that commit
together, a read that sees one snapshot, a COPY and what follows it) takes one with `transaction`:
autocommit off for the block, as psycopg's connections are by default, committed at its end (rolled
back on an error), then on again. A connection not in autocommit (a pool of psycopg's defaults,
as in some tests) runs the block in its implicit transaction, committed by the pool's context as
before.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import Any

import psycopg
from psycopg import AsyncConnection, AsyncCursor
from psycopg.pq import TransactionStatus
from psycopg_pool import AsyncConnectionPool

__all__ = ["PooledConnection", "connection", "pooled_transaction", "transaction"]


class PooledConnection(AsyncConnection[Any]):
    """The pool's connections: a psycopg connection that keeps one cursor for the statements run
    on it over and over (a small batch's). psycopg's `execute` makes a new cursor each time, and
    with it a new adaptation context whose look-ups (a dumper per parameter type, a loader per
    result column) are made again: ~12 µs of CPU per statement in one process, more inside a
    running ingestd."""

    _kept: AsyncCursor[Any] | None = None

    def kept_cursor(self) -> AsyncCursor[Any]:
        """The connection's kept cursor (made on first use, again once closed). One statement
        at a time: its result is the last statement's, read before the next runs."""
        cur = self._kept
        if cur is None or cur.closed:
            cur = self._kept = self.cursor()
        return cur


@asynccontextmanager
async def transaction(conn: AsyncConnection[Any]) -> AsyncIterator[AsyncConnection[Any]]:
    """`conn` (idle) with autocommit off for the block: its statements run in one transaction,
    committed when the block ends and rolled back when it raises, explicit commits and rollbacks
    inside it as on any connection of psycopg's defaults; autocommit is back on afterwards (left
    off only on a broken connection, which the pool discards)."""
    if not conn.autocommit:
        yield conn
        return
    await conn.set_autocommit(False)
    try:
        yield conn
    except BaseException:
        if not conn.closed:  # a broken one: the pool replaces it; the block's error is the answer
            with suppress(psycopg.Error):
                await conn.rollback()
        raise
    else:
        await conn.commit()
    finally:
        if not conn.closed and conn.info.transaction_status is TransactionStatus.IDLE:
            await conn.set_autocommit(True)


@asynccontextmanager
async def connection(
    pool: AsyncConnectionPool[AsyncConnection[Any]], timeout_s: float
) -> AsyncIterator[AsyncConnection[Any]]:
    """A connection from `pool` within `timeout_s` (PoolTimeout past it), as `pool.connection`
    hands it out but without its context's commit when the connection is in autocommit: there
    is nothing to commit, and psycopg's `commit` is a locked wait all the same (~25 µs of a small
    batch inside a running ingestd). A connection not in autocommit is committed on success and
    rolled back on an error by psycopg's context, as before; the pool rolls back whatever a
    returned connection still holds either way."""
    conn = await pool.getconn(timeout=timeout_s)
    try:
        if conn.autocommit:
            yield conn
        else:
            async with conn:
                yield conn
    finally:
        await pool.putconn(conn)


@asynccontextmanager
async def pooled_transaction(
    pool: AsyncConnectionPool[AsyncConnection[Any]], timeout_s: float
) -> AsyncIterator[AsyncConnection[Any]]:
    """A connection from `pool` within `timeout_s` (PoolTimeout past it) in a `transaction`."""
    async with pool.connection(timeout=timeout_s) as conn, transaction(conn):
        yield conn
