"""What the customer database takes on the gateway: its size, and the free disk under it.

Both for the health report (`pusher.ops.health`). The size is `pg_database_size`; the free disk
is the file system's under the server's data directory, which only a role allowed to read
`data_directory` (superuser or pg_read_all_settings) can locate, and only a pusher on the same
host can measure: elsewhere it is None ("not readable"), never a guess.
"""

from __future__ import annotations

import os
from typing import Any

import psycopg
from psycopg.rows import tuple_row

__all__ = ["data_directory", "database_size", "free_disk_bytes"]

DATABASE_SIZE = "SELECT pg_database_size(current_database())"
DATA_DIRECTORY = "SELECT current_setting('data_directory')"


async def database_size(conn: psycopg.AsyncConnection[Any]) -> int | None:
    async with conn.cursor(row_factory=tuple_row) as cur:
        await cur.execute(DATABASE_SIZE)
        row = await cur.fetchone()
    return int(row[0]) if row and row[0] is not None else None


async def data_directory(conn: psycopg.AsyncConnection[Any]) -> str | None:
    """The server's data directory, or None when this role may not read it."""
    try:
        async with conn.cursor(row_factory=tuple_row) as cur:
            await cur.execute(DATA_DIRECTORY)
            row = await cur.fetchone()
    except psycopg.errors.InsufficientPrivilege:
        return None
    return str(row[0]) if row and row[0] else None


def free_disk_bytes(directory: str) -> int | None:
    """Free bytes (for unprivileged users) on `directory`'s file system; None when it is not
    given or not reachable from here (the database on another host)."""
    if not directory:
        return None
    try:
        found = os.statvfs(directory)
    except OSError:
        return None
    return found.f_bavail * found.f_frsize
