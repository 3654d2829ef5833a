"""The service's own endpoints: liveness, readiness, Prometheus metrics, the OpenAPI document.

`/readyz` answers from state refreshed in the background every READY_REFRESH_S
(`readiness_loop`, started by `lifecycle.py`), never with a query per request: the probe is
unauthenticated, and a query each on a 4-connection pool let anyone who can reach it take the
pool's connections."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
import psycopg
from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.aiohttp import make_aiohttp_handler

from ingestd.handlers.http import DB_UNAVAILABLE, Handler, json_answer
from ingestd.keys import EXPECTED_MIGRATIONS, POOL, READINESS, SETTINGS, STORAGE
from ingestd.storage.reads import applied_migrations

__all__ = [
    "READY_REFRESH_S",
    "check_readiness",
    "healthz",
    "metrics_handler",
    "openapi_handler",
    "readiness_loop",
    "readyz",
]

READY_REFRESH_S = 2.0


async def healthz(request: web.Request) -> web.Response:
    """The process is up and serving; says nothing about the database."""
    return json_answer({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Ready when the database answered and every migration of this build was applied, at the
    last background check (at most READY_REFRESH_S ago)."""
    state = request.app[READINESS]
    body = state.body or {"status": "not_ready", "reason": "starting"}
    return json_answer(body, status=state.status)


async def check_readiness(app: web.Application) -> tuple[int, dict[str, Any]]:
    """One readiness check: the database answers, migrations applied, storage bootstrapped."""
    expected = app[EXPECTED_MIGRATIONS]
    try:
        async with app[POOL].connection(timeout=min(2.0, app[SETTINGS].pool_timeout_s)) as conn:
            applied = await applied_migrations(conn)
    except psycopg.errors.UndefinedTable:
        return 503, {"status": "not_ready", "reason": "migrations not applied"}
    except DB_UNAVAILABLE:
        return 503, {"status": "not_ready", "reason": "database unavailable"}
    missing = sorted(expected - applied)
    if missing:
        return 503, {"status": "not_ready", "reason": "migrations pending", "pending": missing}
    storage = app[STORAGE]
    if storage.mode is None:
        return 503, {
            "status": "not_ready",
            "reason": "storage not bootstrapped (run ingestd migrate)",
        }
    return 200, {"status": "ready", "storage": storage.mode.value}


async def readiness_loop(app: web.Application, interval_s: float = READY_REFRESH_S) -> None:
    """Refresh app[READINESS] every `interval_s` for as long as the task runs."""
    state = app[READINESS]
    while True:
        try:
            state.status, state.body = await check_readiness(app)
        except psycopg.Error:
            state.status, state.body = 503, {"status": "not_ready", "reason": "database error"}
        await asyncio.sleep(interval_s)


def metrics_handler(registry: CollectorRegistry) -> Handler:
    """prometheus_client's own handler: negotiates text 0.0.4 or OpenMetrics, and gzip."""
    return make_aiohttp_handler(registry)


def openapi_handler(document: dict[str, Any]) -> Handler:
    """The handler serving `document` (ingestd.openapi's), encoded once."""
    body = msgspec.json.encode(document)

    async def openapi(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/json")

    return openapi
