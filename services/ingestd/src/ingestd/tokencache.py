"""Customers by token hash, kept in the process so a push costs no token query.

Revocation stays immediate across replicas: every change to `fleet.customer_tokens` (revoke,
rotate, delete; any path, a trigger sends it) is announced with `NOTIFY fleet_tokens, '<hash>'`,
and each process listens on a connection of its own (`listen_for_token_changes`) and drops the
entry the moment the notification arrives.

The cache is trusted only while that connection is known to be alive:
- entries are served only while the listener is connected; on a lost connection the cache is
  emptied and every request is looked up in the database until the listener is back (and the
  cache is emptied again then: notifications sent meanwhile were missed);
- a connection that dies silently (no reset) is noticed by a ping every `ping_s`;
- each entry is used for at most `ttl_s` after its lookup, whatever happens.
So a revoked token is refused within milliseconds (the notification's trip) on every replica
with a live listener, and in the worst case (a notification lost on a connection that still
answers pings) after `ttl_s`. A lookup that started before a change announced while it ran is not
cached (the generation counter), so a stale row never re-enters the cache.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg
import structlog
from psycopg import AsyncConnection

from ingestd.storage.tokens import TOKEN_CHANNEL, Customer, listen_token_changes, ping

__all__ = ["TokenCache", "listen_for_token_changes"]

log = structlog.get_logger("ingestd.tokens")


@dataclass(frozen=True, slots=True)
class _Entry:
    customer: Customer
    expires_at: datetime | None
    cached_at: float


class TokenCache:
    """Token hash → customer, for at most `ttl_s`, only while the listener is connected."""

    def __init__(
        self,
        ttl_s: float,
        max_entries: int = 200_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._clock = clock
        self._entries: dict[bytes, _Entry] = {}
        self._generation = 0
        self.listening = False
        self.hits = 0
        self.misses = 0

    @property
    def generation(self) -> int:
        """Take it before a database lookup and hand it back to `put`."""
        return self._generation

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, token_hash: bytes) -> Customer | None:
        entry = self._entries.get(token_hash) if self.listening else None
        if entry is not None and (
            self._clock() - entry.cached_at > self.ttl_s
            or (entry.expires_at is not None and entry.expires_at <= datetime.now(UTC))
        ):
            del self._entries[token_hash]
            entry = None
        if entry is None:
            self.misses += 1
            return None
        self.hits += 1
        return entry.customer

    def put(
        self,
        token_hash: bytes,
        customer: Customer,
        expires_at: datetime | None,
        generation: int,
    ) -> None:
        """Keep a lookup's result, unless a change was announced since it started."""
        if not self.listening or generation != self._generation:
            return
        if len(self._entries) >= self.max_entries:
            self._entries.clear()  # a full cache starts over; lookups refill it
        self._entries[token_hash] = _Entry(customer, expires_at, self._clock())

    def invalidate(self, payload: str) -> None:
        """A notification: drop that token (hex SHA-256), or everything for any other payload."""
        self._generation += 1
        try:
            self._entries.pop(bytes.fromhex(payload), None)
        except ValueError:
            self._entries.clear()

    def stop_trusting(self) -> None:
        self.listening = False
        self._generation += 1
        self._entries.clear()

    def start_trusting(self) -> None:
        self._generation += 1
        self._entries.clear()
        self.listening = True


async def listen_for_token_changes(
    database_url: str,
    cache: TokenCache,
    *,
    ping_s: float,
    reconnect_s: float,
    connect_timeout_s: float,
) -> None:
    """Keep a LISTEN connection open for as long as the task runs, reconnecting after a loss."""
    while True:
        try:
            async with await AsyncConnection.connect(
                database_url,
                autocommit=True,
                application_name="ingestd-tokens",
                connect_timeout=max(1, int(connect_timeout_s)),
            ) as conn:
                await listen_token_changes(conn)
                cache.start_trusting()
                log.info("token_cache_listening", channel=TOKEN_CHANNEL)
                await _serve_notifications(conn, cache, ping_s)
        except (psycopg.Error, OSError) as exc:
            if cache.listening:
                log.warning("token_cache_listener_lost", error=type(exc).__name__)
        finally:
            cache.stop_trusting()
        await asyncio.sleep(reconnect_s)


async def _serve_notifications(
    conn: AsyncConnection[Any], cache: TokenCache, ping_s: float
) -> None:
    while True:
        async for notify in conn.notifies(timeout=ping_s):
            cache.invalidate(notify.payload)
        # Every ping_s: prove the connection still answers (a silent loss is noticed here).
        await asyncio.wait_for(ping(conn), timeout=ping_s)
