"""Typed keys of the state ingestd keeps on its `web.Application` (no module-level singletons)."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

from aiohttp import web
from psycopg_pool import AsyncConnectionPool

from ingestd.admission import Admission
from ingestd.auth import TokenLookups
from ingestd.contacts import Contacts
from ingestd.dbidentity import IdentityWatch
from ingestd.memory import MemoryBudget
from ingestd.metrics import IngestMetrics
from ingestd.ratelimit import FailedAuthLimiter, RateLimiter
from ingestd.readiness import Readiness
from ingestd.settings import Settings
from ingestd.storage.state import StorageState
from ingestd.tokencache import TokenCache

__all__ = [
    "ADMISSION",
    "AUTH_LIMITER",
    "CONTACTS",
    "DECODERS",
    "EXPECTED_MIGRATIONS",
    "IDENTITY",
    "LIMITER",
    "MEMORY",
    "METRICS",
    "POOL",
    "READINESS",
    "REQUEST_ID",
    "SETTINGS",
    "STORAGE",
    "TOKENS",
    "TOKEN_LOOKUPS",
]

SETTINGS = web.AppKey("settings", Settings)
POOL = web.AppKey("pool", AsyncConnectionPool)
LIMITER = web.AppKey("limiter", RateLimiter)
EXPECTED_MIGRATIONS = web.AppKey("expected_migrations", frozenset)
STORAGE = web.AppKey("storage", StorageState)
METRICS = web.AppKey("metrics", IngestMetrics)
AUTH_LIMITER = web.AppKey("auth_limiter", FailedAuthLimiter)
ADMISSION = web.AppKey("admission", Admission)
TOKENS = web.AppKey("tokens", TokenCache)
TOKEN_LOOKUPS = web.AppKey("token_lookups", TokenLookups)
IDENTITY = web.AppKey("identity", IdentityWatch)
CONTACTS = web.AppKey("contacts", Contacts)
MEMORY = web.AppKey("memory", MemoryBudget)
READINESS = web.AppKey("readiness", Readiness)
DECODERS = web.AppKey("decoders", ThreadPoolExecutor)
REQUEST_ID: web.RequestKey[uuid.UUID] = web.RequestKey("request_id")
"""The request's id (the error middleware's; a push's batch id is the same, one uuid4 each)."""
