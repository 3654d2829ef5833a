"""The OpenAPI 3.1 document of ingestd's whole HTTP API, served at /api/fleet/openapi.json.

The document is built from what the code itself uses: the wire contract's paths, headers and
limits from `fleetcore.protocol`, the row schemas, the 200 answer (`IngestResult`) and the error
bodies generated from fleetcore's msgspec structs and error codes (`fleetcore.answers`), so a
changed field, code or limit changes the document. This module assembles it: the row and error
schemas, the probes; each area's paths and answers come from its own module — the push ingest
(`ingestd.openapi_ingest`), the customer list and devices (`ingestd.openapi_admin`), energy
(`ingestd.openapi_energy`), billing (`ingestd.openapi_billing`), reconciliation
(`ingestd.openapi_reconcile`), health reports and the fleet view (`ingestd.openapi_fleet`) — and
what they all build with (references, JSON answers, the answers every operators' path shares)
from `ingestd.openapi_blocks`.
A copy is kept in the repository as docs/openapi.json (`python -m ingestd.openapi > docs/openapi.json`);
a test fails when the two differ, and the tests validate real responses against this document.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from typing import Any

import msgspec
from fleetcore import DeviceRow, ErrorCode, MeasurementRow, SiteRow
from fleetcore.answers import BAD_REQUEST_CODES, answer_schemas, error_schema
from fleetcore.protocol import MAX_BATCH_ROWS, MAX_REJECTED_ROWS, OPENAPI_PATH, TOKEN_HEADER

from ingestd.handlers.admin import ADMIN_PREFIX, FLEET_PREFIX
from ingestd.openapi_admin import ADMIN_SCHEMAS, admin_paths
from ingestd.openapi_billing import BILLING_SCHEMAS, billing_paths
from ingestd.openapi_blocks import REF, json_response
from ingestd.openapi_energy import ENERGY_SCHEMAS, energy_paths
from ingestd.openapi_fleet import FLEET_SCHEMAS, fleet_paths, report_schemas
from ingestd.openapi_ingest import BATCH_SCHEMA, ingest_paths
from ingestd.openapi_reconcile import RECONCILE_SCHEMAS, reconcile_paths

__all__ = ["OPENAPI_PATH", "ROW_STRUCTS", "openapi_document", "row_schemas"]

ROW_STRUCTS: dict[str, type[msgspec.Struct]] = {
    "Site": SiteRow,
    "Device": DeviceRow,
    "Measurement": MeasurementRow,
}
"""The document's name for each row schema, and the fleetcore struct it is generated from."""


def _batch_too_large() -> dict[str, Any]:
    """413 for a batch of too many rows or too many invalid ones: the limit is a constant."""
    schema = error_schema(
        [ErrorCode.TOO_MANY_ROWS, ErrorCode.TOO_MANY_REJECTIONS],
        optional=["max_rows", "max_rejections"],
    )
    schema["properties"]["max_rows"]["const"] = MAX_BATCH_ROWS
    schema["properties"]["max_rejections"]["const"] = MAX_REJECTED_ROWS
    return schema


def row_schemas(structs: Mapping[str, type[msgspec.Struct]] = ROW_STRUCTS) -> dict[str, Any]:
    """JSON Schemas of the row structs, as msgspec validates them, under the document's names."""
    types = list(structs.values())
    _, components = msgspec.json.schema_components(types, ref_template=REF + "{name}")
    schemas: dict[str, Any] = {}
    for name, struct in structs.items():
        schema = dict(components[struct.__name__])
        schema.pop("title", None)
        schemas[name] = schema
    return schemas


def _schemas() -> dict[str, Any]:
    return {
        **row_schemas(),
        **ENERGY_SCHEMAS,
        **BILLING_SCHEMAS,
        **RECONCILE_SCHEMAS,
        **report_schemas(),
        **FLEET_SCHEMAS,
        "Batch": BATCH_SCHEMA,
        **answer_schemas(REF + "{name}"),
        "BadRequest": error_schema(BAD_REQUEST_CODES, optional=["parameter"]),
        "Unauthorized": {
            "type": "object",
            "required": ["error"],
            "properties": {"error": {"const": ErrorCode.UNAUTHORIZED.value}},
        },
        "AdminDisabled": error_schema([ErrorCode.ADMIN_API_DISABLED]),
        "NotFound": error_schema([ErrorCode.NOT_FOUND], optional=["parameter"]),
        "MethodNotAllowed": error_schema([ErrorCode.METHOD_NOT_ALLOWED]),
        "RequestTimeout": error_schema([ErrorCode.REQUEST_TIMEOUT]),
        "PayloadTooLarge": error_schema([ErrorCode.PAYLOAD_TOO_LARGE], ["max_bytes"]),
        "BatchTooLarge": _batch_too_large(),
        "UnsupportedMediaType": error_schema([ErrorCode.UNSUPPORTED_MEDIA_TYPE]),
        "RetryLater": error_schema(
            [ErrorCode.RATE_LIMITED, ErrorCode.UNAVAILABLE], ["retry_after"]
        ),
        "Health": {
            "type": "object",
            "required": ["status"],
            "properties": {"status": {"const": "ok"}},
        },
        "Ready": {
            "type": "object",
            "required": ["status"],
            "properties": {
                "status": {"type": "string", "enum": ["ready", "not_ready"]},
                "storage": {"type": "string", "enum": ["timescaledb", "postgresql"]},
                "reason": {"type": "string"},
                "pending": {"type": "array", "items": {"type": "string"}},
            },
        },
        **ADMIN_SCHEMAS,
    }


def openapi_document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Fleet ingestd",
            "version": "1.0.0",
            "description": "Push ingest for power-meter telemetry (see docs/PROTOCOL.md) and the operators' read API.",
        },
        "components": {
            "schemas": _schemas(),
            "securitySchemes": {
                "customerToken": {"type": "apiKey", "in": "header", "name": TOKEN_HEADER},
                "adminToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "INGESTD_ADMIN_TOKEN",
                },
            },
        },
        "paths": {
            **ingest_paths(),
            "/healthz": {
                "get": {
                    "operationId": "healthz",
                    "summary": "process up",
                    "responses": {"200": json_response("up", "Health")},
                }
            },
            "/readyz": {
                "get": {
                    "operationId": "readyz",
                    "summary": "database reachable, migrations applied, storage bootstrapped",
                    "responses": {
                        "200": json_response("ready", "Ready"),
                        "503": json_response("not ready", "Ready"),
                    },
                }
            },
            OPENAPI_PATH: {
                "get": {
                    "operationId": "openapi",
                    "summary": "this document",
                    "responses": {
                        "200": {
                            "description": "OpenAPI 3.1",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        }
                    },
                }
            },
            "/metrics": {
                "get": {
                    "operationId": "metrics",
                    "summary": "Prometheus metrics (no secrets, no customer labels)",
                    "responses": {
                        "200": {
                            "description": "Prometheus text format 0.0.4, or OpenMetrics when "
                            "the Accept header asks for application/openmetrics-text",
                            "content": {
                                "text/plain": {"schema": {"type": "string"}},
                                "application/openmetrics-text": {"schema": {"type": "string"}},
                            },
                        }
                    },
                }
            },
            **admin_paths(ADMIN_PREFIX),
            **energy_paths(ADMIN_PREFIX),
            **billing_paths(ADMIN_PREFIX),
            **reconcile_paths(ADMIN_PREFIX),
            **fleet_paths(ADMIN_PREFIX, FLEET_PREFIX),
        },
    }


def main() -> int:
    json.dump(openapi_document(), sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
