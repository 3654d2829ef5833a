"""The reconciliation part of the OpenAPI document (docs/PROTOCOL.md, "Reconciliation"): the
digest exchange, generated from fleetcore's msgspec structs, and the read API's per-customer
reconciliation summary. Merged into the one document by `ingestd.openapi`."""

from __future__ import annotations

from typing import Any

import msgspec
from fleetcore.protocol import (
    DATABASE_IDENTITY_HEADER,
    MAX_DIGEST_BODY_BYTES,
    RECONCILE_PATH,
    REPAIR_HEADER,
)
from fleetcore.reconcile import DigestAnswer, DigestRequest

from ingestd.openapi_blocks import (
    REF,
    RETRY_AFTER,
    admin_responses,
    customer_code_param,
    json_response,
    ref,
)

__all__ = ["RECONCILE_SCHEMAS", "reconcile_paths", "repair_header"]

_NULL_TIME = {"type": ["string", "null"], "format": "date-time"}
_NULL_COUNT = {"type": ["integer", "null"], "minimum": 0}


def _struct_schemas() -> dict[str, Any]:
    _, components = msgspec.json.schema_components(
        [DigestRequest, DigestAnswer], ref_template=REF + "{name}"
    )
    for schema in components.values():
        schema.pop("title", None)
    components["DigestRequest"]["description"] = (
        f"at most {MAX_DIGEST_BODY_BYTES} bytes decompressed; cells start on whole UTC hours"
    )
    return dict(components)


_SUMMARY_FIELDS = {
    "last_digest_at": _NULL_TIME,
    "last_cells": _NULL_COUNT,
    "last_differing": _NULL_COUNT,
    "last_differing_at": _NULL_TIME,
    "digest_requests": _NULL_COUNT,
    "cells_compared": _NULL_COUNT,
    "cells_differing": _NULL_COUNT,
    "repair_batches": _NULL_COUNT,
    "repair_rows_sent": _NULL_COUNT,
    "repair_rows_accepted": _NULL_COUNT,
    "repair_rows_rejected": _NULL_COUNT,
    "last_repair_at": _NULL_TIME,
    "first_repair_at": _NULL_TIME,
}

RECONCILE_SCHEMAS: dict[str, Any] = {
    **_struct_schemas(),
    "ReconciliationSummary": {
        "type": "object",
        "required": ["customer", *_SUMMARY_FIELDS],
        "description": "the customer's digest exchanges (totals since the first) and its repair "
        "batches still in the audit trail (INGESTD_AUDIT_RETENTION_DAYS)",
        "properties": {"customer": {"type": "string"}, **_SUMMARY_FIELDS},
    },
}

_IDENTITY = {
    DATABASE_IDENTITY_HEADER: {
        "description": "the central database that answered: system identifier, timeline, "
        "server start (µs); a change means a failover, a restore or a restart",
        "schema": {"type": "string"},
    }
}


def repair_header() -> dict[str, Any]:
    """The ingest endpoint's `X-Push-Repair` parameter."""
    return {
        "name": REPAIR_HEADER,
        "in": "header",
        "required": False,
        "schema": {"type": "string", "enum": ["0", "1"]},
        "description": "1: measurements re-sent by reconciliation (marked in the audit trail)",
    }


def reconcile_paths(prefix: str) -> dict[str, Any]:
    """The digest endpoint, and the summary under the read API's `prefix`."""
    code_param = customer_code_param()
    return {
        RECONCILE_PATH: {
            "post": {
                "operationId": "reconcile",
                "summary": "compare digests of the pusher's measurement keys with the centre's",
                "security": [{"customerToken": []}],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": ref("DigestRequest")}},
                },
                "responses": {
                    "200": json_response("the cells that differ", "DigestAnswer", _IDENTITY),
                    "400": json_response(
                        "not a digest request (invalid_digest), a bad encoding, or a central "
                        "database computing another hash (digest_unsupported)",
                        "BadRequest",
                    ),
                    "401": json_response(
                        "token missing, unknown, revoked or expired", "Unauthorized"
                    ),
                    "408": json_response("body not received in time", "RequestTimeout"),
                    "413": json_response("body over the limit", "PayloadTooLarge"),
                    "415": json_response(
                        "not JSON, or an unknown encoding", "UnsupportedMediaType"
                    ),
                    "429": json_response("customer over its rate limit", "RetryLater", RETRY_AFTER),
                    "503": json_response(
                        "database unavailable, or the digests took too long",
                        "RetryLater",
                        RETRY_AFTER,
                    ),
                },
            }
        },
        f"{prefix}/{{code}}/reconciliation": {
            "get": {
                "operationId": "customerReconciliation",
                "summary": "a customer's last digest exchange and the rows its pusher re-sent",
                "security": [{"adminToken": []}],
                "parameters": [code_param],
                "responses": admin_responses(
                    {
                        "200": json_response("the summary", "ReconciliationSummary"),
                        "404": json_response("unknown customer", "NotFound"),
                    }
                ),
            }
        },
    }
