"""The OpenAPI 3.1 document of ingestd's whole HTTP API, served at /api/fleet/openapi.json.

The document is built from what the code itself uses: the wire contract's paths, headers and
limits from `fleetcore.protocol`, the row schemas, the 200 answer (`IngestResult`) and the error
bodies generated from fleetcore's msgspec structs and error codes (`fleetcore.answers`), so a
changed field, code or limit changes the document. It is one
declarative structure, long because the API has many answers, kept in one module on purpose but
for the energy answers (`ingestd.openapi_energy`).
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
from fleetcore.protocol import (
    BATCH_TYPE_HEADER,
    COLUMNAR_MEDIA_TYPE,
    CURSOR_HEADER,
    INGEST_PATH,
    MAX_BATCH_ROWS,
    MAX_BODY_MEMBERS,
    MAX_CURSOR_LENGTH,
    MAX_REJECTED_ROWS,
    OPENAPI_PATH,
    TOKEN_HEADER,
    BatchType,
)

from ingestd.handlers.admin import ADMIN_PREFIX, FLEET_PREFIX
from ingestd.openapi_billing import BILLING_SCHEMAS, billing_paths
from ingestd.openapi_energy import ENERGY_SCHEMAS, energy_paths
from ingestd.openapi_fleet import FLEET_SCHEMAS, fleet_paths, report_schemas
from ingestd.openapi_reconcile import RECONCILE_SCHEMAS, reconcile_paths, repair_header

__all__ = ["OPENAPI_PATH", "ROW_STRUCTS", "openapi_document", "row_schemas"]

ROW_STRUCTS: dict[str, type[msgspec.Struct]] = {
    "Site": SiteRow,
    "Device": DeviceRow,
    "Measurement": MeasurementRow,
}
"""The document's name for each row schema, and the fleetcore struct it is generated from."""

_REF = "#/components/schemas/"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _REF + name}


_TIME = {"type": "string", "format": "date-time"}
_ID = {"type": "integer", "minimum": 0, "maximum": 2**63 - 1}


def _batch_too_large() -> dict[str, Any]:
    """413 for a batch of too many rows or too many invalid ones: the limit is a constant."""
    schema = error_schema(
        [ErrorCode.TOO_MANY_ROWS, ErrorCode.TOO_MANY_REJECTIONS],
        optional=["max_rows", "max_rejections"],
    )
    schema["properties"]["max_rows"]["const"] = MAX_BATCH_ROWS
    schema["properties"]["max_rejections"]["const"] = MAX_REJECTED_ROWS
    return schema


def _json_response(
    description: str, schema: str, headers: dict[str, Any] | None = None
) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": _ref(schema)}},
    }
    if headers:
        response["headers"] = headers
    return response


_DELETED_MARK = {
    "type": "object",
    "required": ["deleted", "deleted_at"],
    "properties": {
        "deleted": {"type": "boolean"},
        "deleted_at": {"type": ["string", "null"], "format": "date-time"},
    },
}
_RETRY_AFTER = {
    "Retry-After": {"description": "seconds to wait", "schema": {"type": "integer", "minimum": 1}}
}


def row_schemas(structs: Mapping[str, type[msgspec.Struct]] = ROW_STRUCTS) -> dict[str, Any]:
    """JSON Schemas of the row structs, as msgspec validates them, under the document's names."""
    types = list(structs.values())
    _, components = msgspec.json.schema_components(types, ref_template=_REF + "{name}")
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
        "Batch": {
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
                    "items": {"anyOf": [_ref("Site"), _ref("Device"), _ref("Measurement")]},
                }
            },
        },
        **answer_schemas(_REF + "{name}"),
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
        "CustomerSummary": {
            "type": "object",
            "required": [
                "code",
                "name",
                "created_at",
                "first_seen_at",
                "last_seen_at",
                "seconds_since_last_batch",
                "rows_24h",
                "rejected_24h",
                "devices",
                "stale_devices",
            ],
            "properties": {
                "code": {"type": "string"},
                "name": {"type": ["string", "null"]},
                "created_at": _TIME,
                "first_seen_at": {"type": ["string", "null"], "format": "date-time"},
                "last_seen_at": {"type": ["string", "null"], "format": "date-time"},
                "seconds_since_last_batch": {"type": ["number", "null"]},
                "rows_24h": {
                    "type": "integer",
                    "minimum": 0,
                    "description": "measurement rows accepted in the current hour and the 24 before it "
                    "(UTC hours: at least the last 24 h)",
                },
                "rejected_24h": {
                    "type": "integer",
                    "minimum": 0,
                    "description": "rows dead-lettered in the current hour and the 24 before it",
                },
                "devices": {
                    "type": "integer",
                    "minimum": 0,
                    "description": "devices in the customer's devices full set (not deleted)",
                },
                "stale_devices": {
                    "type": "integer",
                    "minimum": 0,
                    "description": "of those, devices with no sample in the last "
                    "INGESTD_STALE_DEVICE_MINUTES",
                },
            },
        },
        "CustomerList": {
            "type": "object",
            "required": ["stale_after_minutes", "customers"],
            "properties": {
                "stale_after_minutes": {"type": "number"},
                "customers": {"type": "array", "items": _ref("CustomerSummary")},
            },
        },
        "DeviceList": {
            "type": "object",
            "required": ["customer", "sites", "devices"],
            "properties": {
                "customer": {"type": "string"},
                "sites": {
                    "type": "array",
                    "items": {
                        "allOf": [
                            _ref("Site"),
                            _DELETED_MARK,
                        ]
                    },
                },
                "devices": {
                    "type": "array",
                    "items": {
                        "allOf": [
                            _ref("Device"),
                            _DELETED_MARK,
                        ]
                    },
                },
            },
        },
    }


def _admin_responses(extra: dict[str, Any]) -> dict[str, Any]:
    return {
        **extra,
        "401": _json_response("missing or wrong admin token", "Unauthorized"),
        "403": _json_response("INGESTD_ADMIN_TOKEN is not set", "AdminDisabled"),
        "429": _json_response(
            "the client address over its failed-authentication budget (wrong admin tokens "
            "spend it like wrong push tokens)",
            "RetryLater",
            _RETRY_AFTER,
        ),
        "503": _json_response("database unavailable", "RetryLater", _RETRY_AFTER),
    }


def openapi_document() -> dict[str, Any]:
    code_param = {"name": "code", "in": "path", "required": True, "schema": {"type": "string"}}

    def header(
        name: str, schema: dict[str, Any], required: bool = False, description: str = ""
    ) -> dict[str, Any]:
        return {
            "name": name,
            "in": "header",
            "required": required,
            "schema": schema,
            "description": description,
        }

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
            INGEST_PATH: {
                "post": {
                    "operationId": "ingest",
                    "summary": "Push one batch of sites, devices or measurements",
                    "security": [{"customerToken": []}],
                    "parameters": [
                        header(
                            BATCH_TYPE_HEADER,
                            {"type": "string", "enum": [t.value for t in BatchType]},
                            True,
                        ),
                        header(
                            CURSOR_HEADER,
                            {"type": "string", "maxLength": MAX_CURSOR_LENGTH},
                            False,
                            "client cursor, stored in the audit row",
                        ),
                        repair_header(),
                        header(
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
                            "application/json": {"schema": _ref("Batch")},
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
                        "200": _json_response(
                            "batch processed (some rows may be rejected)", "IngestResult"
                        ),
                        "400": _json_response(
                            "bad batch type, body not JSON or not columnar v1, no items list, "
                            "bad gzip or zstd, bad cursor",
                            "BadRequest",
                        ),
                        "401": _json_response(
                            "token missing, unknown, revoked or expired", "Unauthorized"
                        ),
                        "408": _json_response("body not received in time", "RequestTimeout"),
                        "413": {
                            "description": "body over the limit, compressed or decompressed; "
                            f"more than {MAX_BATCH_ROWS} rows, or more than {MAX_REJECTED_ROWS} "
                            "rejected rows (send fewer rows at a time)",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "oneOf": [_ref("PayloadTooLarge"), _ref("BatchTooLarge")]
                                    }
                                }
                            },
                        },
                        "415": _json_response(
                            "unsupported Content-Type or Content-Encoding", "UnsupportedMediaType"
                        ),
                        "429": _json_response(
                            "customer over its rate limit or its concurrent requests, or the "
                            "client address over its failed-authentication budget",
                            "RetryLater",
                            _RETRY_AFTER,
                        ),
                        "503": _json_response(
                            "database unavailable, past capacity, memory budget spent, or "
                            "decoding past its deadline",
                            "RetryLater",
                            _RETRY_AFTER,
                        ),
                    },
                }
            },
            "/healthz": {
                "get": {
                    "operationId": "healthz",
                    "summary": "process up",
                    "responses": {"200": _json_response("up", "Health")},
                }
            },
            "/readyz": {
                "get": {
                    "operationId": "readyz",
                    "summary": "database reachable, migrations applied, storage bootstrapped",
                    "responses": {
                        "200": _json_response("ready", "Ready"),
                        "503": _json_response("not ready", "Ready"),
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
            ADMIN_PREFIX: {
                "get": {
                    "operationId": "listCustomers",
                    "summary": "customers with first/last seen and 24-hour counts",
                    "security": [{"adminToken": []}],
                    "responses": _admin_responses(
                        {"200": _json_response("customers", "CustomerList")}
                    ),
                }
            },
            f"{ADMIN_PREFIX}/{{code}}/devices": {
                "get": {
                    "operationId": "listDevices",
                    "summary": "a customer's sites and devices, deleted ones marked",
                    "security": [{"adminToken": []}],
                    "parameters": [code_param],
                    "responses": _admin_responses(
                        {
                            "200": _json_response("sites and devices", "DeviceList"),
                            "404": _json_response("unknown customer", "NotFound"),
                        }
                    ),
                }
            },
            **energy_paths(ADMIN_PREFIX, code_param, _admin_responses, _json_response),
            **billing_paths(ADMIN_PREFIX, code_param, _admin_responses, _json_response),
            **reconcile_paths(ADMIN_PREFIX, code_param, _admin_responses, _json_response),
            **fleet_paths(ADMIN_PREFIX, FLEET_PREFIX, code_param, _admin_responses, _json_response),
        },
    }


def main() -> int:
    json.dump(openapi_document(), sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
