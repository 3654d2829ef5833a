"""The ingestd HTTP application: `create_app(settings)`, its middleware and its lifecycle.

Routes (handlers in `ingestd.handlers`):

    POST /api/fleet/ingest          handlers.ingest (the push protocol, docs/PROTOCOL.md)
    POST /api/fleet/reconcile       handlers.reconcile (digests, docs/PROTOCOL.md "Reconciliation")
    POST /api/fleet/health          handlers.health (a gateway's health report)
    GET  /api/fleet/customers…      handlers.admin, a sub-application behind the admin token
    GET  /api/fleet/gateways        handlers.fleet, the same behind the admin token
    GET  /healthz /readyz /metrics /api/fleet/openapi.json      handlers.service

Lifecycle: one `cleanup_ctx` per resource, so a failed start tears down exactly what was set up:
migrations (INGESTD_MIGRATE_ON_START) → the connection pool (fails fast when the database cannot
be reached) → the storage (bootstrapped with INGESTD_MIGRATE_ON_START, detected otherwise) → the
token cache's LISTEN connection (`ingestd.tokencache`) → the housekeeping task → the fleet-state
task (`ingestd.fleetwatch`); the decoding threads (`ingestd.decoding`, one per slot) before the
pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import structlog
from aiohttp import web
from fleetcore.answers import ErrorBody
from fleetcore.error_codes import ErrorCode
from fleetcore.protocol import (
    ACCEPT_ENCODING_HEADER,
    ACCEPT_POST_HEADER,
    ACCEPTED_ENCODINGS,
    ACCEPTED_MEDIA_TYPES,
    DATABASE_IDENTITY_HEADER,
    HEALTH_HEADER,
    HEALTH_PATH,
    HEALTH_VERSION,
    INGEST_PATH,
    OPENAPI_PATH,
    RECONCILE_PATH,
)
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from ingestd.admission import Admission
from ingestd.auth import TokenLookups
from ingestd.contacts import Contacts
from ingestd.dbidentity import IdentityWatch
from ingestd.errors import IngestError, NotFound, ServiceUnavailable, StartupError
from ingestd.fleetwatch import FleetFigures, fleet_state_loop
from ingestd.handlers.admin import ADMIN_PREFIX, FLEET_PREFIX, create_admin_app, create_fleet_app
from ingestd.handlers.health import health_report
from ingestd.handlers.http import DB_UNAVAILABLE, Handler, json_answer
from ingestd.handlers.ingest import batch_type_of, ingest
from ingestd.handlers.reconcile import reconcile
from ingestd.handlers.service import (
    check_readiness,
    healthz,
    metrics_handler,
    openapi_handler,
    readiness_loop,
    readyz,
)
from ingestd.housekeeping import housekeeping_loop
from ingestd.keys import (
    ADMISSION,
    AUTH_LIMITER,
    CONTACTS,
    DECODERS,
    EXPECTED_MIGRATIONS,
    IDENTITY,
    LIMITER,
    MEMORY,
    METRICS,
    POOL,
    READINESS,
    REQUEST_ID,
    SETTINGS,
    STORAGE,
    TOKEN_LOOKUPS,
    TOKENS,
)
from ingestd.looplag import watch_loop
from ingestd.memory import MemoryBudget
from ingestd.metrics import IngestMetrics
from ingestd.migrate import apply_migrations, migration_ids
from ingestd.openapi import openapi_document
from ingestd.pooled import PooledConnection
from ingestd.ratelimit import FailedAuthLimiter, RateLimiter
from ingestd.readiness import Readiness
from ingestd.settings import Settings
from ingestd.storage.state import open_storage
from ingestd.tokencache import TokenCache, listen_for_token_changes

__all__ = ["INGEST_PATH", "POOL", "SERVER_OPTIONS", "SETTINGS", "create_app"]

log = structlog.get_logger("ingestd")

# Options for the aiohttp server (AppRunner, TestServer, run_app) running this app: ingestd inflates
# gzip bodies itself, counting wire and decompressed bytes against their limits.
SERVER_OPTIONS: dict[str, Any] = {"auto_decompress": False}

# A background loop gets this many cancels, this far apart, before shutdown goes on without it.
STOP_ROUNDS = 50
STOP_ROUND_S = 0.2

# The negotiation (docs/PROTOCOL.md): every answer of the ingest endpoint says what it accepts.
_ACCEPTS = {
    ACCEPT_POST_HEADER: ", ".join(ACCEPTED_MEDIA_TYPES),
    ACCEPT_ENCODING_HEADER: ", ".join(ACCEPTED_ENCODINGS),
    HEALTH_HEADER: HEALTH_VERSION,
}


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Bind a request id, turn every error into the protocol's JSON body (never a trace), count
    ingest answers and their latency, and say on each what bodies the endpoint accepts and which
    database answered. With INGESTD_ADMIN_PORT, it answers each path on its listener only
    (`_check_listener`; one middleware, not two: each costs its own frames per request)."""
    structlog.contextvars.clear_contextvars()
    request[REQUEST_ID] = request_id = uuid.uuid4()  # a push's batch id too
    structlog.contextvars.bind_contextvars(request_id=str(request_id))
    started = time.perf_counter()
    response = await _answer(request, handler)
    path = request.path
    if path in (INGEST_PATH, RECONCILE_PATH):
        identity = request.app[IDENTITY].value
        if identity is not None:
            response.headers[DATABASE_IDENTITY_HEADER] = identity
    if path in (INGEST_PATH, HEALTH_PATH):
        response.headers.update(_ACCEPTS)
        if path == HEALTH_PATH:
            label = "health"
        else:
            kind = batch_type_of(request)
            label = kind.value if kind else "invalid"
        request.app[METRICS].observe_request(label, response.status, time.perf_counter() - started)
    return response


async def _answer(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        try:
            _check_listener(request)
            return await handler(request)
        except DB_UNAVAILABLE as exc:
            log.warning("database_unavailable", error=type(exc).__name__, detail=str(exc)[:200])
            retry_after = request.app[ADMISSION].spread(request.app[SETTINGS].retry_after_s)
            raise ServiceUnavailable(retry_after, "database unavailable, retry later") from None
    except IngestError as exc:
        return json_answer(exc.body(), status=exc.status, headers=exc.headers())
    except web.HTTPException as exc:
        if exc.status == 404:
            return json_answer(NotFound("no such endpoint").body(), status=404)
        if exc.status == 405:
            return json_answer(
                ErrorBody(ErrorCode.METHOD_NOT_ALLOWED),
                status=405,
                headers={"Allow": exc.headers.get("Allow", "")},
            )
        return json_answer({"error": exc.reason.lower().replace(" ", "_")}, status=exc.status)
    except Exception:
        log.exception("unhandled_error", path=request.path)
        return json_answer(ErrorBody(ErrorCode.INTERNAL_ERROR), status=500)


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
async def _background(work: Coroutine[Any, Any, None], name: str) -> AsyncIterator[None]:
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
    async with _background(watch_loop(app[METRICS].loop_lag.observe), "loop-lag"):
        yield


async def _readiness_ctx(app: web.Application) -> AsyncIterator[None]:
    app[READINESS].status, app[READINESS].body = await check_readiness(app)
    async with _background(readiness_loop(app), "readiness"):
        yield


def _admin_path(path: str) -> bool:
    """Paths served on the admin listener when there is one (INGESTD_ADMIN_PORT)."""
    return path in ("/readyz", "/metrics") or path.startswith((ADMIN_PREFIX, FLEET_PREFIX))


def _check_listener(request: web.Request) -> None:
    """With INGESTD_ADMIN_PORT, the read API, /metrics and /readyz answer only on that port and
    the push endpoints only on INGESTD_PORT (/healthz and the OpenAPI document on both): the
    public port exposes nothing an operator's network alone should reach (404 elsewhere)."""
    admin_port = request.app[SETTINGS].admin_port
    if admin_port is not None and request.path not in ("/healthz", OPENAPI_PATH):
        sockname = request.transport.get_extra_info("sockname") if request.transport else None
        on_admin = isinstance(sockname, tuple) and len(sockname) > 1 and sockname[1] == admin_port
        if on_admin != _admin_path(request.path):
            raise NotFound("no such endpoint on this port")


def _housekeeping_ctx(settings: Settings) -> Context:
    async def housekeeping_ctx(app: web.Application) -> AsyncIterator[None]:
        async with _background(housekeeping_loop(app[STORAGE], settings), "housekeeping"):
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
        async with _background(loop, "fleet-state"):
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
        async with _background(listener, "token-listener"):
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


def create_app(settings: Settings) -> web.Application:
    """Build the application; the database pool opens (and fails fast) at startup.

    Serve it with `SERVER_OPTIONS` (aiohttp must not inflate bodies itself, or gzip bodies
    arrive already inflated and are refused as invalid gzip).
    """
    app = web.Application(
        middlewares=[error_middleware],
        client_max_size=settings.max_wire_bytes,
    )
    app[SETTINGS] = settings
    shares = settings.limit_shares  # each process enforces its share of the configured totals
    app[LIMITER] = RateLimiter(
        settings.rate_limit_per_s / shares, max(1, settings.rate_limit_burst // shares)
    )
    app[AUTH_LIMITER] = FailedAuthLimiter(
        settings.auth_failures_per_min / shares, max(1, settings.auth_failure_burst // shares)
    )
    app[TOKENS] = TokenCache(settings.token_cache_ttl_s)
    app[TOKEN_LOOKUPS] = TokenLookups(app[TOKENS])
    app[CONTACTS] = Contacts()
    app[METRICS] = IngestMetrics()
    app[ADMISSION] = Admission(
        settings.max_inflight,
        settings.max_waiting,
        settings.inflight_wait_s,
        settings.busy_retry_after_s,
        per_customer=settings.max_inflight_per_customer,
        busy_retry_after_max_s=settings.busy_retry_after_max_s,
        return_share=settings.busy_return_share,
    )
    app[METRICS].watch_admission(app[ADMISSION])
    app[MEMORY] = MemoryBudget(settings.memory_budget_bytes)
    app[READINESS] = Readiness()
    app[EXPECTED_MIGRATIONS] = frozenset(migration_ids())
    app[IDENTITY] = IdentityWatch()
    app.cleanup_ctx.extend(
        [
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
    )
    app.router.add_post(INGEST_PATH, ingest)
    app.router.add_post(RECONCILE_PATH, reconcile)
    app.router.add_post(HEALTH_PATH, health_report)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get(OPENAPI_PATH, openapi_handler(openapi_document()))
    app.router.add_get("/metrics", metrics_handler(app[METRICS].registry))
    app.add_subapp(ADMIN_PREFIX, create_admin_app())
    app.add_subapp(FLEET_PREFIX, create_fleet_app())
    return app
