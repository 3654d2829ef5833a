"""The service's own endpoints: liveness, readiness, Prometheus metrics, the OpenAPI document."""

from __future__ import annotations

from typing import Any

import msgspec
import psycopg
from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.aiohttp import make_aiohttp_handler

from ingestd.handlers.http import DB_UNAVAILABLE, Handler, json_answer
from ingestd.keys import EXPECTED_MIGRATIONS, POOL, SETTINGS, STORAGE
from ingestd.storage.reads import applied_migrations

__all__ = ["healthz", "metrics_handler", "openapi_handler", "readyz"]


async def healthz(request: web.Request) -> web.Response:
    """The process is up and serving; says nothing about the database."""
    return json_answer({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Ready when the database answers and every migration of this build is applied."""
    expected = request.app[EXPECTED_MIGRATIONS]
    try:
        async with request.app[POOL].connection(
            timeout=min(2.0, request.app[SETTINGS].pool_timeout_s)
        ) as conn:
            applied = await applied_migrations(conn)
    except psycopg.errors.UndefinedTable:
        return json_answer({"status": "not_ready", "reason": "migrations not applied"}, status=503)
    except DB_UNAVAILABLE:
        return json_answer({"status": "not_ready", "reason": "database unavailable"}, status=503)
    missing = sorted(expected - applied)
    if missing:
        return json_answer(
            {"status": "not_ready", "reason": "migrations pending", "pending": missing}, status=503
        )
    storage = request.app[STORAGE]
    if storage.mode is None:
        return json_answer(
            {"status": "not_ready", "reason": "storage not bootstrapped (run ingestd migrate)"},
            status=503,
        )
    return json_answer({"status": "ready", "storage": storage.mode.value})


def metrics_handler(registry: CollectorRegistry) -> Handler:
    """prometheus_client's own handler: negotiates text 0.0.4 or OpenMetrics, and gzip."""
    return make_aiohttp_handler(registry)


def openapi_handler(document: dict[str, Any]) -> Handler:
    """The handler serving `document` (ingestd.openapi's), encoded once."""
    body = msgspec.json.encode(document)

    async def openapi(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/json")

    return openapi
