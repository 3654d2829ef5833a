"""What every part of the OpenAPI document builds with (`ingestd.openapi` and its parts): a
schema reference, the time and id schemas, a JSON answer, the answers every path of the
operators' read API shares, a query parameter, an answer of rows in JSON or CSV."""

from __future__ import annotations

from typing import Any

__all__ = [
    "ID",
    "REF",
    "RETRY_AFTER",
    "TIME",
    "admin_responses",
    "customer_code_param",
    "json_response",
    "query_param",
    "ref",
    "rows_response",
]

REF = "#/components/schemas/"
TIME = {"type": "string", "format": "date-time"}
ID = {"type": "integer", "minimum": 0, "maximum": 2**63 - 1}
RETRY_AFTER = {
    "Retry-After": {"description": "seconds to wait", "schema": {"type": "integer", "minimum": 1}}
}


def ref(name: str) -> dict[str, str]:
    return {"$ref": REF + name}


def json_response(
    description: str, schema: str, headers: dict[str, Any] | None = None
) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": ref(schema)}},
    }
    if headers:
        response["headers"] = headers
    return response


def admin_responses(extra: dict[str, Any]) -> dict[str, Any]:
    """`extra` and the answers of every path behind the admin token."""
    return {
        **extra,
        "401": json_response("missing or wrong admin token", "Unauthorized"),
        "403": json_response("INGESTD_ADMIN_TOKEN is not set", "AdminDisabled"),
        "429": json_response(
            "the client address over its failed-authentication budget (wrong admin tokens "
            "spend it like wrong push tokens)",
            "RetryLater",
            RETRY_AFTER,
        ),
        "503": json_response("database unavailable", "RetryLater", RETRY_AFTER),
    }


def customer_code_param() -> dict[str, Any]:
    """The read API's `{code}` path parameter: the customer's code."""
    return {"name": "code", "in": "path", "required": True, "schema": {"type": "string"}}


def query_param(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "schema": schema, "description": description}


def rows_response(description: str, schema: str) -> dict[str, Any]:
    """An answer of rows: JSON, or CSV when asked for."""
    return {
        "description": description,
        "content": {
            "application/json": {"schema": ref(schema)},
            "text/csv": {"schema": {"type": "string"}},
        },
    }
