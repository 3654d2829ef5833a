"""The wire contract of the push protocol (docs/PROTOCOL.md) as constants both sides import.

The pusher builds its requests from these names, ingestd routes and checks them, and the OpenAPI
document is generated from them: a changed path, header or limit changes all three at once.
"""

from __future__ import annotations

from fleetcore.schemas import BatchType

__all__ = [
    "API_PREFIX",
    "BATCH_TYPE_HEADER",
    "CURSOR_HEADER",
    "INGEST_PATH",
    "MAX_CURSOR_LENGTH",
    "MAX_ERRORS_IN_RESPONSE",
    "OPENAPI_PATH",
    "TOKEN_HEADER",
    "BatchType",
]

API_PREFIX = "/api/fleet"
INGEST_PATH = f"{API_PREFIX}/ingest"
OPENAPI_PATH = f"{API_PREFIX}/openapi.json"

TOKEN_HEADER = "X-Customer-Token"
BATCH_TYPE_HEADER = "X-Batch-Type"
CURSOR_HEADER = "X-Push-Cursor"

MAX_CURSOR_LENGTH = 256
"""Characters of X-Push-Cursor ingestd accepts (it only logs and audits the value)."""

MAX_ERRORS_IN_RESPONSE = 100
"""Rejected rows listed in a 200 answer's `errors`; the count covers them all."""
