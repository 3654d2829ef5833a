"""The wire contract of the push protocol (docs/PROTOCOL.md) as constants both sides import.

The pusher builds its requests from these names, ingestd routes and checks them, and the OpenAPI
document is generated from them: a changed path, header or limit changes all three at once.
"""

from __future__ import annotations

import enum

from fleetcore.columnar_layout import COLUMNAR_MEDIA_TYPE
from fleetcore.limits import MAX_BATCH_ROWS, MAX_BODY_MEMBERS, MAX_REJECTED_ROWS
from fleetcore.schemas import BatchType

__all__ = [
    "ACCEPTED_ENCODINGS",
    "ACCEPTED_MEDIA_TYPES",
    "ACCEPT_ENCODING_HEADER",
    "ACCEPT_POST_HEADER",
    "API_PREFIX",
    "BATCH_TYPE_HEADER",
    "COLUMNAR_MEDIA_TYPE",
    "CURSOR_HEADER",
    "DATABASE_IDENTITY_HEADER",
    "HEALTH_HEADER",
    "HEALTH_PATH",
    "HEALTH_VERSION",
    "INGEST_PATH",
    "JSON_MEDIA_TYPE",
    "MAX_BATCH_ROWS",
    "MAX_BODY_MEMBERS",
    "MAX_CURSOR_LENGTH",
    "MAX_DIGEST_BODY_BYTES",
    "MAX_ERRORS_IN_RESPONSE",
    "MAX_REJECTED_ROWS",
    "OPENAPI_PATH",
    "RECONCILE_PATH",
    "REPAIR_HEADER",
    "TOKEN_HEADER",
    "BatchType",
    "WireFormat",
]

API_PREFIX = "/api/fleet"
INGEST_PATH = f"{API_PREFIX}/ingest"
OPENAPI_PATH = f"{API_PREFIX}/openapi.json"
RECONCILE_PATH = f"{API_PREFIX}/reconcile"
HEALTH_PATH = f"{API_PREFIX}/health"
"""Where a pusher sends its health report (`fleetcore.health`)."""

TOKEN_HEADER = "X-Customer-Token"
BATCH_TYPE_HEADER = "X-Batch-Type"
CURSOR_HEADER = "X-Push-Cursor"
REPAIR_HEADER = "X-Push-Repair"
"""`1` on a measurement batch a pusher re-sends because reconciliation found the centre lacking
(docs/PROTOCOL.md, "Reconciliation"): stored like any batch, marked in the audit trail."""
DATABASE_IDENTITY_HEADER = "X-Database-Identity"
"""On every answer of the ingest and reconcile endpoints: which central database answered
(`<system identifier>.<timeline>.<server start>`); a change tells a pusher to reconcile soon."""

MAX_DIGEST_BODY_BYTES = 1024 * 1024
"""A digest request's decompressed body at most (its cells are bounded too: fleetcore.reconcile)."""

MAX_CURSOR_LENGTH = 256
"""Characters of X-Push-Cursor ingestd accepts (it only logs and audits the value)."""

MAX_ERRORS_IN_RESPONSE = 100
"""Rejected rows listed in a 200 answer's `errors`; the count covers them all."""

JSON_MEDIA_TYPE = "application/json"


class WireFormat(enum.StrEnum):
    """The body formats a batch goes in, each its media type: JSON (every batch type, gzip'd)
    and the columnar encoding (measurements only, zstd'd when that makes it smaller), which a
    pusher sends only to an ingestd whose answers list it (`ACCEPT_POST_HEADER`)."""

    JSON = JSON_MEDIA_TYPE
    COLUMNAR = COLUMNAR_MEDIA_TYPE


ACCEPTED_MEDIA_TYPES: tuple[str, ...] = tuple(WireFormat)
"""Request body types ingestd takes; the columnar one carries measurements only."""
ACCEPTED_ENCODINGS: tuple[str, ...] = ("gzip", "zstd")
"""Content-Encodings ingestd takes besides none at all."""

ACCEPT_POST_HEADER = "Accept-Post"
ACCEPT_ENCODING_HEADER = "Accept-Encoding"
"""The negotiation: every answer of the ingest endpoint lists the body types (`Accept-Post`, as
in W3C LDP) and content codings (`Accept-Encoding`, as RFC 9110 lets a server say which it
takes) it accepts; a pusher sends columnar zstd bodies only to an ingestd that lists both."""

HEALTH_HEADER = "X-Health-Report"
HEALTH_VERSION = "1"
"""Health reports, a negotiation of their own: every answer of the ingest and health endpoints
says `X-Health-Report: 1`; a pusher sends reports to `HEALTH_PATH` only to an ingestd that said
so (an older one never sees them)."""
