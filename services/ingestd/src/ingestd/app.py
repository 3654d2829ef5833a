"""The ingestd HTTP application: `create_app(settings)`, its middleware and its lifecycle.

Routes (handlers in `ingestd.handlers`):

    POST /api/fleet/ingest          handlers.ingest (the push protocol, docs/PROTOCOL.md)
    POST /api/fleet/reconcile       handlers.reconcile (digests, docs/PROTOCOL.md "Reconciliation")
    POST /api/fleet/health          handlers.health (a gateway's health report)
    GET  /api/fleet/customers…      handlers.admin, a sub-application behind the admin token
    GET  /api/fleet/gateways        handlers.fleet, the same behind the admin token
    GET  /healthz /readyz /metrics /api/fleet/openapi.json      handlers.service

Lifecycle: one `cleanup_ctx` per resource, so a failed start tears down exactly what was set up
(`ingestd.lifecycle`: migrations, the decoding threads, the pool, the storage, the background
loops).
"""

from __future__ import annotations

import time
import uuid
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

from ingestd.admission import Admission
from ingestd.auth import TokenLookups
from ingestd.contacts import Contacts
from ingestd.dbidentity import IdentityWatch
from ingestd.errors import IngestError, NotFound, ServiceUnavailable
from ingestd.handlers.admin import ADMIN_PREFIX, FLEET_PREFIX, create_admin_app, create_fleet_app
from ingestd.handlers.health import health_report
from ingestd.handlers.http import DB_UNAVAILABLE, Handler, json_answer
from ingestd.handlers.ingest import batch_type_of, ingest
from ingestd.handlers.reconcile import reconcile
from ingestd.handlers.service import healthz, metrics_handler, openapi_handler, readyz
from ingestd.keys import (
    ADMISSION,
    AUTH_LIMITER,
    CONTACTS,
    EXPECTED_MIGRATIONS,
    IDENTITY,
    LIMITER,
    MEMORY,
    METRICS,
    POOL,
    READINESS,
    REQUEST_ID,
    SETTINGS,
    TOKEN_LOOKUPS,
    TOKENS,
)
from ingestd.lifecycle import cleanup_contexts
from ingestd.memory import MemoryBudget
from ingestd.metrics import IngestMetrics
from ingestd.migrate import migration_ids
from ingestd.openapi import openapi_document
from ingestd.ratelimit import FailedAuthLimiter, RateLimiter
from ingestd.readiness import Readiness
from ingestd.settings import Settings
from ingestd.tokencache import TokenCache

__all__ = ["INGEST_PATH", "POOL", "SERVER_OPTIONS", "SETTINGS", "create_app"]

log = structlog.get_logger("ingestd")

# Options for the aiohttp server (AppRunner, TestServer, run_app) running this app: ingestd inflates
# gzip bodies itself, counting wire and decompressed bytes against their limits.
SERVER_OPTIONS: dict[str, Any] = {"auto_decompress": False}

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
    app.cleanup_ctx.extend(cleanup_contexts(settings))
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
