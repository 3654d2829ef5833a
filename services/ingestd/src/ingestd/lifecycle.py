"""ingestd's lifecycle: one aiohttp `cleanup_ctx` per resource, so a failed start tears down
exactly what was set up.

In order (`cleanup_contexts`): migrations (INGESTD_MIGRATE_ON_START) → the decoding threads
(`ingestd.decoding`, one per slot) → the connection pool (fails fast when the database cannot be
reached) → the storage (bootstrapped with INGESTD_MIGRATE_ON_START, detected otherwise) → the
token cache's LISTEN connection (`ingestd.tokencache`) → the readiness probe's loop → the
housekeeping task → the fleet-state task (`ingestd.fleetwatch`) → the event loop's lag watch →
the startup objects frozen out of the collector's view. Each background loop runs as a task for
the life of its context and is cancelled and awaited at cleanup (`background`).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator, Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import structlog
from aiohttp import web
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from ingestd.errors import StartupError
from ingestd.fleetwatch import FleetFigures, fleet_state_loop
from ingestd.handlers.service import check_readiness, readiness_loop
from ingestd.housekeeping import housekeeping_loop
from ingestd.keys import CONTACTS, DECODERS, IDENTITY, METRICS, POOL, READINESS, STORAGE, TOKENS
from ingestd.looplag import watch_loop
from ingestd.migrate import apply_migrations
from ingestd.pooled import PooledConnection
from ingestd.settings import Settings
from ingestd.storage.state import open_storage
from ingestd.tokencache import listen_for_token_changes

__all__ = ["STOP_ROUNDS", "STOP_ROUND_S", "Context", "background", "cleanup_contexts"]

log = structlog.get_logger("ingestd")

# A background loop gets this many cancels, this far apart, before shutdown goes on without it.
STOP_ROUNDS = 50
STOP_ROUND_S = 0.2


Context = Callable[[web.Application], AsyncIterator[None]]


def _migrations_ctx(settings: Settings) -> Context:
    async def migrations_ctx(app: web.Application) -> AsyncIterator[None]:
        if settings.migrate_on_start:
            applied = await asyncio.to_thread(apply_migrations, settings.database_url)
            log.info("migrations_applied", applied=applied)
        yield

    return migrations_ctx


def _pool_ctx(settings: Settings) -> Context:
    async def pool_ctx(app: web.Application) -> AsyncIterator[None]:
        pool: AsyncConnectionPool[AsyncConnection[Any]] = AsyncConnectionPool(
            settings.database_url,
            min_size=settings.pool_min_size,
            max_size=settings.pool_max_size,
            timeout=settings.pool_timeout_s,
            open=False,
            kwargs={
                "application_name": "ingestd",
                "autocommit": True,  # between uses; `ingestd.pooled.transaction` where one is needed
                "connect_timeout": max(1, int(settings.connect_timeout_s)),
            },
            name="ingestd",
            connection_class=PooledConnection,
            configure=app[IDENTITY].configure,
        )
        async with pool:  # closes the pool however this context ends
            try:
                await pool.open(wait=True, timeout=settings.connect_timeout_s)
            except PoolTimeout:
                raise StartupError(
                    f"cannot connect to the database within {settings.connect_timeout_s:g} s "
                    "(check INGESTD_DATABASE_URL and that PostgreSQL is up)"
                ) from None
            app[POOL] = pool
            app[METRICS].watch(
                pool.get_stats, lambda: app[STORAGE].dirty_buckets if STORAGE in app else None
            )
            yield

    return pool_ctx


def _storage_ctx(settings: Settings) -> Context:
    async def storage_ctx(app: web.Application) -> AsyncIterator[None]:
        async with await AsyncConnection.connect(
            settings.database_url,
            autocommit=True,
            connect_timeout=max(1, int(settings.connect_timeout_s)),
        ) as conn:
            app[STORAGE] = await open_storage(
                conn, settings.storage, bootstrap=settings.migrate_on_start
            )
        log.info("storage", mode=str(app[STORAGE].mode))
        yield

    return storage_ctx


def _decoders_ctx(settings: Settings) -> Context:
    async def decoders_ctx(app: web.Application) -> AsyncIterator[None]:
        # One thread per slot: a batch decodes only while it holds a slot (ingestd.decoding).
        pool = ThreadPoolExecutor(settings.max_inflight, thread_name_prefix="ingestd-decode")
        app[DECODERS] = pool
        try:
            yield
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    return decoders_ctx


@contextlib.asynccontextmanager
async def background(work: Coroutine[Any, Any, None], name: str) -> AsyncIterator[None]:
    """Runs `work` as a task for the life of a cleanup context: cancelled and awaited at cleanup
    (aiohttp's background-task pattern, written once for every loop the app runs)."""
    task = asyncio.create_task(work, name=name)
    try:
        yield
    finally:
        await _stop(task)


async def _stop(task: asyncio.Task[None]) -> None:
    """Cancel `task` until it ends, bounded. Cancelling once is not always enough on Python 3.11:
    `asyncio.wait_for` (psycopg_pool waits for a connection with it) returns its result and drops
    a cancel that arrives as the wait completes (CPython gh-86296, fixed in 3.12), and the loop
    then slept on as if never cancelled — a shutdown that hung (seen in the fleet-state loop)."""
    for _ in range(STOP_ROUNDS):
        task.cancel()
        done, _pending = await asyncio.wait({task}, timeout=STOP_ROUND_S)
        if done:
            with contextlib.suppress(asyncio.CancelledError):
                await task
            return
    log.error("background_task_stuck", task=task.get_name(), waited_s=STOP_ROUNDS * STOP_ROUND_S)


async def _loop_lag_ctx(app: web.Application) -> AsyncIterator[None]:
    async with background(watch_loop(app[METRICS].loop_lag.observe), "loop-lag"):
        yield


async def _readiness_ctx(app: web.Application) -> AsyncIterator[None]:
    app[READINESS].status, app[READINESS].body = await check_readiness(app)
    async with background(readiness_loop(app), "readiness"):
        yield


def _housekeeping_ctx(settings: Settings) -> Context:
    async def housekeeping_ctx(app: web.Application) -> AsyncIterator[None]:
        async with background(housekeeping_loop(app[STORAGE], settings), "housekeeping"):
            yield

    return housekeeping_ctx


def _fleet_state_ctx(settings: Settings) -> Context:
    async def fleet_state_ctx(app: web.Application) -> AsyncIterator[None]:
        figures = FleetFigures()
        app[METRICS].watch_fleet(figures)
        loop = fleet_state_loop(
            app[POOL],
            app[CONTACTS],
            settings.health,
            settings.stale_device_after.total_seconds(),
            figures,
            settings.pool_timeout_s,
        )
        async with background(loop, "fleet-state"):
            yield

    return fleet_state_ctx


def _token_listener_ctx(settings: Settings) -> Context:
    async def token_listener_ctx(app: web.Application) -> AsyncIterator[None]:
        if settings.token_cache_ttl_s <= 0:  # cache off: every request looks its token up
            yield
            return
        listener = listen_for_token_changes(
            settings.database_url,
            app[TOKENS],
            ping_s=settings.token_cache_ping_s,
            reconnect_s=1.0,
            connect_timeout_s=settings.connect_timeout_s,
        )
        async with background(listener, "token-listener"):
            yield

    return token_listener_ctx


async def _frozen_startup_objects(app: web.Application) -> AsyncIterator[None]:
    """Move every object alive once started (modules, numpy, psycopg, aiohttp, the pool: most
    of the process's objects) out of the collector's view (`gc.freeze`) for as long as the app
    runs: they live as long as it does, and each full collection walked all of them with the
    event loop stopped (the longest seen under 33 requests/s of 27-row batches: 50-125 ms
    before, 1.5 ms after). At cleanup they are handed back (`gc.unfreeze`), so what the app
    leaves behind can be collected (a process that starts many apps, as the tests do)."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def cleanup_contexts(settings: Settings) -> list[Context]:
    """The app's cleanup contexts, in the order they start (and the reverse of their cleanup)."""
    return [
        _migrations_ctx(settings),
        _decoders_ctx(settings),
        _pool_ctx(settings),
        _storage_ctx(settings),
        _token_listener_ctx(settings),
        _readiness_ctx,
        _housekeeping_ctx(settings),
        _fleet_state_ctx(settings),
        _loop_lag_ctx,
        _frozen_startup_objects,  # last: once the others have started, first to end
    ]
