"""The ingestd HTTP application: `create_app(settings)` and its handlers.

Request flow of `POST /api/fleet/ingest`, cheapest refusals first:
token (401) → batch type and headers (400/415/413 by Content-Length) → rate limit (429) →
body within limits (413/408/400) → per-row validation → one transaction that stores the rows,
the dead letters and the audit row and marks the customer seen. A database that cannot be
reached within the pool deadline answers 503 with Retry-After; the process stays up and the
pool reconnects on its own when the database is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import msgspec
import psycopg
import structlog
from aiohttp import web
from fleetcore import (
    BatchFormatError,
    BatchType,
    ParsedBatch,
    ValidationWindow,
    hash_token,
    looks_like_token,
    parse_batch,
)
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from ingestd.auth import TOKEN_HEADER, Customer, authenticate
from ingestd.body import check_content_headers, decode_body, read_wire_body
from ingestd.errors import (
    BadRequest,
    IngestError,
    NotFound,
    RateLimited,
    ServiceUnavailable,
    Unauthorized,
)
from ingestd.housekeeping import StorageState, housekeeping_loop, open_storage
from ingestd.keys import (
    AUTH_LIMITER,
    EXPECTED_MIGRATIONS,
    INFLIGHT,
    LIMITER,
    METRICS,
    POOL,
    SETTINGS,
    STORAGE,
)
from ingestd.metrics import CONTENT_TYPE, IngestMetrics
from ingestd.migrate import apply_migrations, migration_ids
from ingestd.openapi import OPENAPI_PATH, openapi_document
from ingestd.ratelimit import FailedAuthLimiter, RateLimiter
from ingestd.readapi import add_read_routes
from ingestd.settings import Settings
from ingestd.storage import BootstrapError
from ingestd.storage.rollup import mark_dirty
from ingestd.store import (
    AuditRecord,
    StoreResult,
    record_event,
    store_full_set,
    store_measurements,
    store_rejections,
)

__all__ = ["INGEST_PATH", "POOL", "SERVER_OPTIONS", "SETTINGS", "create_app"]

log = structlog.get_logger("ingestd")

INGEST_PATH = "/api/fleet/ingest"
BATCH_TYPE_HEADER = "X-Batch-Type"
CURSOR_HEADER = "X-Push-Cursor"
MAX_CURSOR_LENGTH = 256
MAX_ERRORS_IN_RESPONSE = 100


# Options for the aiohttp server (AppRunner, TestServer, run_app) running this app: ingestd inflates
# gzip bodies itself, counting wire and decompressed bytes against their limits.
SERVER_OPTIONS: dict[str, Any] = {"auto_decompress": False}

_DB_UNAVAILABLE = (psycopg.OperationalError, psycopg.InterfaceError, PoolTimeout)
_encode = msgspec.json.Encoder().encode


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=_encode(body), status=status, headers=headers, content_type="application/json"
    )


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_BATCH_LABELS = frozenset(t.value for t in BatchType)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Bind a request id, turn every error into the protocol's JSON body (never a trace), and
    count ingest answers and their latency."""
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(request_id=str(uuid.uuid4()))
    started = time.perf_counter()
    response = await _answer(request, handler)
    if request.path == INGEST_PATH:
        kind = request.headers.get(BATCH_TYPE_HEADER, "").strip().lower()
        label = kind if kind in _BATCH_LABELS else "invalid"
        metrics = request.app[METRICS]
        metrics.requests.labels(label, str(response.status)).inc()
        metrics.latency.labels(label).observe(time.perf_counter() - started)
    return response


async def _answer(request: web.Request, handler: Handler) -> web.StreamResponse:
    retry_after = request.app[SETTINGS].retry_after_s
    try:
        try:
            return await handler(request)
        except _DB_UNAVAILABLE as exc:
            log.warning("database_unavailable", error=type(exc).__name__, detail=str(exc)[:200])
            raise ServiceUnavailable(retry_after, "database unavailable, retry later") from None
    except IngestError as exc:
        return _json(exc.body(), status=exc.status, headers=exc.headers())
    except web.HTTPException as exc:
        if exc.status == 404:
            return _json(NotFound("no such endpoint").body(), status=404)
        if exc.status == 405:
            return _json(
                {"error": "method_not_allowed"},
                status=405,
                headers={"Allow": exc.headers.get("Allow", "")},
            )
        return _json({"error": exc.reason.lower().replace(" ", "_")}, status=exc.status)
    except Exception:
        log.exception("unhandled_error", path=request.path)
        return _json({"error": "internal_error"}, status=500)


@asynccontextmanager
async def _connection(request: web.Request) -> AsyncIterator[AsyncConnection[Any]]:
    settings = request.app[SETTINGS]
    async with request.app[POOL].connection(timeout=settings.pool_timeout_s) as conn:
        yield conn


def _batch_type(request: web.Request) -> BatchType:
    raw = request.headers.get(BATCH_TYPE_HEADER, "")
    try:
        return BatchType(raw.strip().lower())
    except ValueError:
        raise BadRequest(
            "unknown_batch_type", f"{BATCH_TYPE_HEADER} must be sites, devices or measurements"
        ) from None


def _client_cursor(request: web.Request) -> str | None:
    cursor = request.headers.get(CURSOR_HEADER)
    if cursor is not None and len(cursor) > MAX_CURSOR_LENGTH:
        raise BadRequest(
            "invalid_cursor", f"{CURSOR_HEADER} is longer than {MAX_CURSOR_LENGTH} characters"
        )
    return cursor


async def _store(
    conn: AsyncConnection[Any],
    storage: StorageState,
    customer: Customer,
    kind: BatchType,
    parsed: ParsedBatch[Any],
) -> StoreResult:
    if kind is BatchType.MEASUREMENTS:
        result = await store_measurements(conn, customer.id, parsed.rows)
        if result.accepted:
            await mark_dirty(conn, customer.id, *storage.buckets(parsed))
        return result
    result = await store_full_set(conn, customer.id, kind, parsed.rows, parsed.ids_seen)
    return StoreResult(result.accepted, parsed.duplicates)


async def _record_failure(request: web.Request, event: AuditRecord) -> None:
    """Best effort: a refused batch still gets its audit row when the database is reachable."""
    try:
        async with _connection(request) as conn:
            await record_event(conn, event, seen=False)
    except (*_DB_UNAVAILABLE, psycopg.Error) as exc:
        log.warning("audit_write_failed", error=type(exc).__name__)


def _client_address(request: web.Request, settings: Settings) -> str:
    if settings.trust_forwarded_for:
        forwarded = request.headers.get("X-Forwarded-For", "").split(",")[0].strip()
        if forwarded:
            return forwarded
    return request.remote or "unknown"


async def _authenticate(request: web.Request, settings: Settings) -> Customer:
    """The token's customer; failed attempts are limited per client address (429 past the budget)."""
    token = request.headers.get(TOKEN_HEADER)
    token_hash = hash_token(token) if looks_like_token(token) and token else b""
    address = _client_address(request, settings)
    limiter = request.app[AUTH_LIMITER]
    wait = limiter.wait(address, token_hash)
    if wait > 0:
        raise RateLimited(
            RateLimiter.retry_after(wait), "too many failed authentications from this address"
        )
    try:
        async with _connection(request) as conn:
            customer = await authenticate(conn, token)
    except Unauthorized:
        limiter.failed(address)
        limiter.forget(token_hash)
        request.app[METRICS].auth_failures.inc()
        raise
    limiter.succeeded(token_hash)
    return customer


async def _take_slot(request: web.Request, settings: Settings) -> bool:
    """Admit the batch among the INGESTD_MAX_INFLIGHT being inflated, parsed and stored; past a
    short wait, shed it with 503 and a short Retry-After. Only received bodies wait for a slot, so
    slow senders cannot hold them; a waiting body is still compressed (memory stays bounded)."""
    try:
        async with asyncio.timeout(settings.inflight_wait_s):
            await request.app[INFLIGHT].acquire()
    except TimeoutError:
        raise ServiceUnavailable(settings.busy_retry_after_s, "busy, retry later") from None
    return True


async def ingest(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    started = time.perf_counter()
    customer = await _authenticate(request, settings)
    structlog.contextvars.bind_contextvars(customer=customer.code)
    batch_id = uuid.uuid4()
    kind_header = request.headers.get(BATCH_TYPE_HEADER, "")[:32]
    wire_bytes = request.content_length or 0
    body_bytes: int | None = None
    cursor: str | None = None
    holding_slot = False
    try:
        kind = _batch_type(request)
        cursor = _client_cursor(request)
        gzip = check_content_headers(request, settings.max_wire_bytes)
        wait = request.app[LIMITER].acquire(customer.id)
        if wait > 0:
            raise RateLimited(RateLimiter.retry_after(wait), "rate limit exceeded")
        wire = await read_wire_body(
            request, max_wire_bytes=settings.max_wire_bytes, timeout_s=settings.body_timeout_s
        )
        wire_bytes = len(wire)
        holding_slot = await _take_slot(request, settings)
        body = decode_body(wire, gzip=gzip, max_body_bytes=settings.max_body_bytes)
        del wire
        wire_bytes, body_bytes = body.wire_bytes, len(body.data)
        window = ValidationWindow(
            datetime.now(UTC), settings.effective_max_sample_age, settings.max_sample_ahead
        )
        try:
            parsed = parse_batch(body.data, kind, window)
        except BatchFormatError as exc:
            raise BadRequest(exc.code, exc.detail) from None
        del body

        min_time = parsed.first_time.astimezone(UTC) if parsed.first_time else None
        max_time = parsed.last_time.astimezone(UTC) if parsed.last_time else None
        storage = request.app[STORAGE]
        async with _connection(request) as conn:
            if kind is BatchType.MEASUREMENTS:
                await storage.ensure_weeks(conn, storage.missing_weeks(parsed))
            result = await _store(conn, storage, customer, kind, parsed)
            await store_rejections(conn, customer.id, batch_id, kind, parsed.rejections)
            duration_ms = (time.perf_counter() - started) * 1000
            event = AuditRecord(
                batch_id=batch_id,
                customer_id=customer.id,
                batch_type=kind.value,
                wire_bytes=wire_bytes,
                body_bytes=body_bytes,
                duration_ms=duration_ms,
                outcome="rejected_rows" if parsed.rejections else "ok",
                status=200,
                accepted=result.accepted,
                duplicates=result.duplicates,
                rejected=len(parsed.rejections),
                client_cursor=cursor,
                min_time=min_time,
                max_time=max_time,
            )
            await record_event(conn, event, seen=True)
    except IngestError as exc:
        if exc.status not in (429, 503):  # overload answers are counted in logs, not written
            await _record_failure(
                request,
                AuditRecord(
                    batch_id=batch_id,
                    customer_id=customer.id,
                    batch_type=kind_header or "unknown",
                    wire_bytes=wire_bytes,
                    body_bytes=body_bytes,
                    duration_ms=(time.perf_counter() - started) * 1000,
                    outcome=exc.code,
                    status=exc.status,
                    client_cursor=cursor,
                    error=(exc.detail or exc.code)[:1000],
                ),
            )
        log.info(
            "batch",
            batch_id=str(batch_id),
            batch_type=kind_header,
            status=exc.status,
            error=exc.code,
            detail=exc.detail,
            wire_bytes=wire_bytes,
            duration_ms=round((time.perf_counter() - started) * 1000, 2),
        )
        raise
    finally:
        if holding_slot:
            request.app[INFLIGHT].release()

    request.app[METRICS].observe_batch(
        kind.value,
        result.accepted,
        result.duplicates,
        len(parsed.rejections),
        wire_bytes,
        body_bytes or 0,
    )
    log.info(
        "batch",
        batch_id=str(batch_id),
        batch_type=kind.value,
        status=200,
        accepted=result.accepted,
        duplicates=result.duplicates,
        rejected=len(parsed.rejections),
        wire_bytes=wire_bytes,
        body_bytes=body_bytes,
        duration_ms=round(event.duration_ms, 2),
    )
    return _json(
        {
            "batch_type": kind.value,
            "batch_id": str(batch_id),
            "accepted": result.accepted,
            "duplicates": result.duplicates,
            "rejected": len(parsed.rejections),
            "errors": [
                {"index": r.index, "reason": r.reason}
                for r in parsed.rejections[:MAX_ERRORS_IN_RESPONSE]
            ],
        }
    )


async def healthz(request: web.Request) -> web.Response:
    """The process is up and serving; says nothing about the database."""
    return _json({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Ready when the database answers and every migration of this build is applied."""
    expected = request.app[EXPECTED_MIGRATIONS]
    try:
        async with request.app[POOL].connection(
            timeout=min(2.0, request.app[SETTINGS].pool_timeout_s)
        ) as conn:
            cur = await conn.execute("SELECT migration_id FROM public._yoyo_migration")
            applied = {row[0] for row in await cur.fetchall()}
    except psycopg.errors.UndefinedTable:
        return _json({"status": "not_ready", "reason": "migrations not applied"}, status=503)
    except _DB_UNAVAILABLE:
        return _json({"status": "not_ready", "reason": "database unavailable"}, status=503)
    missing = sorted(expected - applied)
    if missing:
        return _json(
            {"status": "not_ready", "reason": "migrations pending", "pending": missing}, status=503
        )
    storage = request.app[STORAGE]
    if storage.mode is None:
        return _json(
            {"status": "not_ready", "reason": "storage not bootstrapped (run ingestd migrate)"},
            status=503,
        )
    return _json({"status": "ready", "storage": storage.mode.value})


def _pool_ctx(settings: Settings) -> Callable[[web.Application], AsyncIterator[None]]:
    async def pool_ctx(app: web.Application) -> AsyncIterator[None]:
        if settings.migrate_on_start:
            applied = await asyncio.to_thread(apply_migrations, settings.database_url)
            log.info("migrations_applied", applied=applied)
        pool: AsyncConnectionPool[AsyncConnection[Any]] = AsyncConnectionPool(
            settings.database_url,
            min_size=settings.pool_min_size,
            max_size=settings.pool_max_size,
            timeout=settings.pool_timeout_s,
            open=False,
            kwargs={
                "application_name": "ingestd",
                "connect_timeout": max(1, int(settings.connect_timeout_s)),
            },
            name="ingestd",
        )
        try:
            await pool.open(wait=True, timeout=settings.connect_timeout_s)
        except PoolTimeout:
            await pool.close()
            raise RuntimeError(
                f"cannot connect to the database within {settings.connect_timeout_s:g} s "
                "(check INGESTD_DATABASE_URL and that PostgreSQL is up)"
            ) from None
        app[POOL] = pool
        app[METRICS].watch(
            pool.get_stats, lambda: app[STORAGE].dirty_buckets if STORAGE in app else None
        )
        try:
            async with await AsyncConnection.connect(
                settings.database_url,
                autocommit=True,
                connect_timeout=max(1, int(settings.connect_timeout_s)),
            ) as conn:
                app[STORAGE] = await open_storage(
                    conn, settings, bootstrap=settings.migrate_on_start
                )
        except (psycopg.Error, BootstrapError):
            await pool.close()
            raise
        log.info("storage", mode=str(app[STORAGE].mode))
        housekeeping = asyncio.create_task(housekeeping_loop(app[STORAGE]), name="housekeeping")
        try:
            yield
        finally:
            housekeeping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await housekeeping
            await pool.close()

    return pool_ctx


def create_app(settings: Settings) -> web.Application:
    """Build the application; the database pool opens (and fails fast) at startup.

    Serve it with `SERVER_OPTIONS` (aiohttp must not inflate bodies itself, or gzip bodies
    arrive already inflated and are refused as invalid gzip).
    """
    app = web.Application(middlewares=[error_middleware], client_max_size=settings.max_wire_bytes)
    app[SETTINGS] = settings
    app[LIMITER] = RateLimiter(settings.rate_limit_per_s, settings.rate_limit_burst)
    app[AUTH_LIMITER] = FailedAuthLimiter(
        settings.auth_failures_per_min, settings.auth_failure_burst
    )
    app[METRICS] = IngestMetrics()
    app[INFLIGHT] = asyncio.Semaphore(settings.max_inflight)
    app[EXPECTED_MIGRATIONS] = frozenset(migration_ids())
    app.cleanup_ctx.append(_pool_ctx(settings))
    app.router.add_post(INGEST_PATH, ingest)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    add_read_routes(app)
    document = _encode(openapi_document())

    async def openapi(request: web.Request) -> web.Response:
        return web.Response(body=document, content_type="application/json")

    app.router.add_get(OPENAPI_PATH, openapi)

    async def metrics(request: web.Request) -> web.Response:
        body = request.app[METRICS].render()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})

    app.router.add_get("/metrics", metrics)
    return app
