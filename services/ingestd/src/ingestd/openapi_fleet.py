"""The health report and fleet view parts of the OpenAPI document (`ingestd.openapi`).

The report's schema is generated from fleetcore's `HealthReport` (its wire names, limits and
optional fields as msgspec checks them); the fleet view's answers are described here.
"""

from __future__ import annotations

from typing import Any

import msgspec
from fleetcore import MAX_REPORT_BYTES, HealthReport
from fleetcore.protocol import HEALTH_HEADER, HEALTH_PATH, HEALTH_VERSION

from ingestd.fleetstate import GATEWAY_STATES, METER_STATES
from ingestd.openapi_blocks import (
    REF,
    TIME,
    admin_responses,
    customer_code_param,
    json_response,
    ref,
)

__all__ = ["FLEET_SCHEMAS", "fleet_paths", "report_schemas"]

_OPT_TIME = {"type": ["string", "null"], "format": "date-time"}
_OPT_NUMBER = {"type": ["number", "null"]}
_OPT_INT = {"type": ["integer", "null"], "minimum": 0}


def report_schemas() -> dict[str, Any]:
    """`HealthReport` and `ResourceHealth` as msgspec validates them (wire names)."""
    _, components = msgspec.json.schema_components([HealthReport], ref_template=REF + "{name}")
    schemas = {name: dict(schema) for name, schema in components.items()}
    for schema in schemas.values():
        schema.pop("title", None)
    schemas["HealthReport"]["description"] = (
        f"At most {MAX_REPORT_BYTES} bytes as sent and decompressed. Keys: v version, w wire "
        "format, st process start (Unix s), pi push interval s, hb heartbeat s, m/s/d per "
        "resource (b backlog rows, l lag s, a oldest unshipped age s, f consecutive failures, "
        "e last error kind), q quarantined rows, bx blocking transaction age s, db local database "
        "bytes, df free disk bytes, co clock offset s (server minus gateway), cap upload cap "
        "bytes/s, tx bytes sent, h host name (docs/PROTOCOL.md)."
    )
    return schemas


_STATES = {"type": "array", "items": {"type": "string", "enum": list(GATEWAY_STATES)}}
_GATEWAY_FIELDS: dict[str, Any] = {
    "customer": {"type": "string"},
    "token_hint": {"type": "string", "description": "the token's first characters"},
    "states": {**_STATES, "description": 'docs/OPERATIONS.md, Fleet; ["ok"] when none holds'},
    "last_report_at": TIME,
    "last_contact_at": {**TIME, "description": "the last request of any kind with this token"},
    "seconds_since_report": {"type": "number"},
    "silent_after_s": {"type": "number", "description": "silent past this many seconds"},
    "first_report_at": TIME,
    "started_at": _OPT_TIME,
    "host": {"type": ["string", "null"]},
    "version": {"type": "string"},
    "wire_format": {"type": "string"},
    "push_interval_s": _OPT_NUMBER,
    "heartbeat_s": _OPT_NUMBER,
    "backlog_rows": {"type": "integer", "minimum": 0},
    "lag_s": _OPT_NUMBER,
    "oldest_unshipped_age_s": _OPT_NUMBER,
    "failures": {"type": "integer", "minimum": 0},
    "last_error": {"type": ["string", "null"]},
    "quarantined_rows": {"type": "integer", "minimum": 0},
    "blocking_age_s": _OPT_NUMBER,
    "db_bytes": _OPT_INT,
    "disk_free_bytes": _OPT_INT,
    "clock_offset_s": _OPT_NUMBER,
    "upload_cap": {"type": "integer", "minimum": 0},
    "sent_bytes": {"type": "integer", "minimum": 0},
    "reports": {"type": "integer", "minimum": 1},
    "implausible": {
        "type": "array",
        "items": {"type": "string"},
        "description": "fields of the latest report flagged implausible (stored as null)",
    },
}
_METER_STATE = {"type": "string", "enum": list(METER_STATES)}

FLEET_SCHEMAS: dict[str, Any] = {
    "HealthStored": {
        "type": "object",
        "required": ["stored", "implausible"],
        "properties": {
            "stored": {"const": True},
            "implausible": {"type": "array", "items": {"type": "string"}},
        },
    },
    "Gateway": {
        "type": "object",
        "required": list(_GATEWAY_FIELDS),
        "properties": _GATEWAY_FIELDS,
    },
    "GatewayList": {
        "type": "object",
        "required": ["generated_at", "counts", "gateways"],
        "properties": {
            "generated_at": TIME,
            "counts": {
                "type": "object",
                "description": "gateways per state, over all gateways (before the filter)",
                "additionalProperties": {"type": "integer", "minimum": 0},
            },
            "gateways": {
                "type": "array",
                "items": {
                    "allOf": [
                        ref("Gateway"),
                        {
                            "type": "object",
                            "required": ["meters_not_ok"],
                            "properties": {
                                "meters_not_ok": {
                                    "type": "array",
                                    "description": "the customer's meters whose state is not "
                                    "ok, as the housekeeping last derived them",
                                    "items": {
                                        "type": "object",
                                        "required": ["device_id", "state", "since"],
                                        "properties": {
                                            "device_id": {"type": "integer"},
                                            "state": _METER_STATE,
                                            "since": TIME,
                                        },
                                    },
                                }
                            },
                        },
                    ]
                },
            },
        },
    },
    "CustomerGateways": {
        "type": "object",
        "required": ["customer", "generated_at", "gateways", "meters"],
        "properties": {
            "customer": {"type": "string"},
            "generated_at": TIME,
            "gateways": {"type": "array", "items": ref("Gateway")},
            "meters": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["device_id", "state", "last_sample_at", "usual_interval_s"],
                    "properties": {
                        "device_id": {"type": "integer"},
                        "state": _METER_STATE,
                        "last_sample_at": _OPT_TIME,
                        "usual_interval_s": _OPT_NUMBER,
                    },
                },
            },
        },
    },
}


def fleet_paths(
    admin_prefix: str,
    fleet_prefix: str,
) -> dict[str, Any]:
    """POST the health report; GET the fleet view and one customer's gateways."""
    code_param = customer_code_param()
    advertised = {
        HEALTH_HEADER: {
            "description": f"`{HEALTH_VERSION}`: this server takes health reports",
            "schema": {"type": "string"},
        }
    }
    retry = {"Retry-After": {"schema": {"type": "integer", "minimum": 1}}}
    return {
        HEALTH_PATH: {
            "post": {
                "operationId": "healthReport",
                "summary": "A gateway's health report (the latest per token is kept)",
                "security": [{"customerToken": []}],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": ref("HealthReport")}},
                },
                "responses": {
                    "200": json_response("stored", "HealthStored", advertised),
                    "400": json_response("not a health report (names the field)", "BadRequest"),
                    "401": json_response(
                        "token missing, unknown, revoked or expired", "Unauthorized"
                    ),
                    "413": json_response(f"over {MAX_REPORT_BYTES} bytes", "PayloadTooLarge"),
                    "415": json_response("not JSON, or another encoding", "UnsupportedMediaType"),
                    "429": json_response("customer over its rate limit", "RetryLater", retry),
                    "503": json_response("database unavailable", "RetryLater", retry),
                },
            }
        },
        fleet_prefix: {
            "get": {
                "operationId": "listGateways",
                "summary": "every gateway's latest report and states",
                "security": [{"adminToken": []}],
                "parameters": [
                    {
                        "name": "state",
                        "in": "query",
                        "schema": {"type": "string"},
                        "description": "comma-separated states; gateways in any of them "
                        "(default: all but retired)",
                    },
                    {"name": "customer", "in": "query", "schema": {"type": "string"}},
                ],
                "responses": admin_responses(
                    {
                        "200": json_response("gateways", "GatewayList"),
                        "400": json_response("unknown state", "BadRequest"),
                    }
                ),
            }
        },
        f"{admin_prefix}/{{code}}/gateways": {
            "get": {
                "operationId": "customerGateways",
                "summary": "a customer's gateways and its meters' states now",
                "security": [{"adminToken": []}],
                "parameters": [code_param],
                "responses": admin_responses(
                    {
                        "200": json_response("gateways and meters", "CustomerGateways"),
                        "404": json_response("unknown customer", "NotFound"),
                    }
                ),
            }
        },
    }
