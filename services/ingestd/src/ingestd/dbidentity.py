"""The central database's identity as ingestd last saw it, told to every pusher in the
`X-Database-Identity` header of its answers (docs/PROTOCOL.md, "Reconciliation").

Read on each new pool connection (the pool's `configure` hook): after a failover, a restore or a
restart every connection is new, so the first answer from the changed database already carries
its new identity. A pusher that sees the identity change runs a reconciliation pass soon after.
"""

from __future__ import annotations

from typing import Any

import psycopg
import structlog
from psycopg import AsyncConnection

from ingestd.storage.digests import read_identity

__all__ = ["IdentityWatch"]

log = structlog.get_logger("ingestd")


class IdentityWatch:
    """The latest identity read (None until a connection was made, or where the server does
    not let this role read `pg_control_system()`)."""

    def __init__(self) -> None:
        self.value: str | None = None

    async def configure(self, conn: AsyncConnection[Any]) -> None:
        """The pool's `configure` hook: read the identity; a failure is logged, never fatal."""
        try:
            async with conn.transaction():
                identity = str(await read_identity(conn))
        except psycopg.Error as exc:
            log.warning("database_identity_unreadable", error=type(exc).__name__)
            return
        if identity != self.value:
            log.info("database_identity", identity=identity, previous=self.value)
            self.value = identity
