"""The push ingest part of the OpenAPI document (docs/PROTOCOL.md): the batch a gateway POSTs,
its headers and its answers. Merged into the one document by `ingestd.openapi`."""

from __future__ import annotations

from typing import Any

from fleetcore.protocol import (
    BATCH_TYPE_HEADER,
    COLUMNAR_MEDIA_TYPE,
    CURSOR_HEADER,
    INGEST_PATH,
    MAX_BATCH_ROWS,
    MAX_BODY_MEMBERS,
    MAX_CURSOR_LENGTH,
    MAX_REJECTED_ROWS,
    BatchType,
)

from ingestd.openapi_blocks import RETRY_AFTER, json_response, ref
from ingestd.openapi_reconcile import repair_header

__all__ = ["BATCH_SCHEMA", "ingest_paths"]


def _header(
    name: str, schema: dict[str, Any], required: bool = False, description: str = ""
) -> dict[str, Any]:
    return {
        "name": name,
        "in": "header",
        "required": required,
        "schema": schema,
        "description": description,
    }


BATCH_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["items"],
    "description": "Rows are validated one by one: a bad row is rejected alone (see "
    f"IngestResult); a batch with more than {MAX_REJECTED_ROWS} rejected rows is refused "
    f"whole (413 too_many_rejections). At most {MAX_BATCH_ROWS} items, in the columnar "
    "encoding too (413 too_many_rows).",
    "properties": {
        "items": {
            "type": "array",
            "maxItems": MAX_BATCH_ROWS,
            "items": {"anyOf": [ref("Site"), ref("Device"), ref("Measurement")]},
        }
    },
}


def ingest_paths() -> dict[str, Any]:
    """POST one batch of sites, devices or measurements."""
    return {
        INGEST_PATH: {
            "post": {
                "operationId": "ingest",
                "summary": "Push one batch of sites, devices or measurements",
                "security": [{"customerToken": []}],
                "parameters": [
                    _header(
                        BATCH_TYPE_HEADER,
                        {"type": "string", "enum": [t.value for t in BatchType]},
                        True,
                    ),
                    _header(
                        CURSOR_HEADER,
                        {"type": "string", "maxLength": MAX_CURSOR_LENGTH},
                        False,
                        "client cursor, stored in the audit row",
                    ),
                    repair_header(),
                    _header(
                        "Content-Encoding",
                        {"type": "string", "enum": ["gzip", "zstd", "identity"]},
                        False,
                        f"at most {MAX_BODY_MEMBERS} gzip members or zstd frames per body "
                        "(400 too_many_members)",
                    ),
                ],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {"schema": ref("Batch")},
                        COLUMNAR_MEDIA_TYPE: {
                            "schema": {
                                "type": "string",
                                "format": "binary",
                                "description": "measurements only; layout in docs/PROTOCOL.md",
                            }
                        },
                    },
                },
                "responses": {
                    "200": json_response(
                        "batch processed (some rows may be rejected)", "IngestResult"
                    ),
                    "400": json_response(
                        "bad batch type, body not JSON or not columnar v1, no items list, "
                        "bad gzip or zstd, bad cursor",
                        "BadRequest",
                    ),
                    "401": json_response(
                        "token missing, unknown, revoked or expired", "Unauthorized"
                    ),
                    "408": json_response("body not received in time", "RequestTimeout"),
                    "413": {
                        "description": "body over the limit, compressed or decompressed; "
                        f"more than {MAX_BATCH_ROWS} rows, or more than {MAX_REJECTED_ROWS} "
                        "rejected rows (send fewer rows at a time)",
                        "content": {
                            "application/json": {
                                "schema": {"oneOf": [ref("PayloadTooLarge"), ref("BatchTooLarge")]}
                            }
                        },
                    },
                    "415": json_response(
                        "unsupported Content-Type or Content-Encoding", "UnsupportedMediaType"
                    ),
                    "429": json_response(
                        "customer over its rate limit or its concurrent requests, or the "
                        "client address over its failed-authentication budget",
                        "RetryLater",
                        RETRY_AFTER,
                    ),
                    "503": json_response(
                        "database unavailable, past capacity, memory budget spent, or "
                        "decoding past its deadline",
                        "RetryLater",
                        RETRY_AFTER,
                    ),
                },
            }
        },
    }
