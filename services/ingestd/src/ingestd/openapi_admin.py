"""The operators' customer list and a customer's sites and devices (`ingestd.handlers.admin`) in
the OpenAPI document. Merged into the one document by `ingestd.openapi`."""

from __future__ import annotations

from typing import Any

from ingestd.openapi_blocks import TIME, admin_responses, customer_code_param, json_response, ref

__all__ = ["ADMIN_SCHEMAS", "admin_paths"]


_DELETED_MARK = {
    "type": "object",
    "required": ["deleted", "deleted_at"],
    "properties": {
        "deleted": {"type": "boolean"},
        "deleted_at": {"type": ["string", "null"], "format": "date-time"},
    },
}

ADMIN_SCHEMAS: dict[str, Any] = {
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
            "created_at": TIME,
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
            "customers": {"type": "array", "items": ref("CustomerSummary")},
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
                        ref("Site"),
                        _DELETED_MARK,
                    ]
                },
            },
            "devices": {
                "type": "array",
                "items": {
                    "allOf": [
                        ref("Device"),
                        _DELETED_MARK,
                    ]
                },
            },
        },
    },
}


def admin_paths(admin_prefix: str) -> dict[str, Any]:
    """GET the customer list and one customer's sites and devices."""
    code_param = customer_code_param()
    return {
        admin_prefix: {
            "get": {
                "operationId": "listCustomers",
                "summary": "customers with first/last seen and 24-hour counts",
                "security": [{"adminToken": []}],
                "responses": admin_responses({"200": json_response("customers", "CustomerList")}),
            }
        },
        f"{admin_prefix}/{{code}}/devices": {
            "get": {
                "operationId": "listDevices",
                "summary": "a customer's sites and devices, deleted ones marked",
                "security": [{"adminToken": []}],
                "parameters": [code_param],
                "responses": admin_responses(
                    {
                        "200": json_response("sites and devices", "DeviceList"),
                        "404": json_response("unknown customer", "NotFound"),
                    }
                ),
            }
        },
    }
