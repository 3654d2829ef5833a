"""The billing part of the OpenAPI document: site and customer totals, peak demand
(docs/ENERGY.md). Merged into the one document by `ingestd.openapi`; the field lists come from
the handlers' own constants, so a new column changes the document."""

from __future__ import annotations

from typing import Any

from ingestd.handlers.billing import DEMAND_CSV_FIELDS, MAX_MONTHS, TOTAL_CSV_FIELDS
from ingestd.handlers.corrections import CHANGES_MAX_LIMIT
from ingestd.openapi_blocks import (
    ID,
    TIME,
    admin_responses,
    customer_code_param,
    json_response,
    query_param,
    ref,
    rows_response,
)
from ingestd.storage.demand import DEMAND_MINUTES
from ingestd.storage.revisions import CHANGE_FIELDS
from ingestd.storage.totals import RESOLUTIONS

__all__ = ["BILLING_SCHEMAS", "billing_paths"]

_COUNT = {"type": "integer", "minimum": 0}
_ENERGY = ("energy_imp_kwh", "energy_exp_kwh", "energy_q_imp_kvarh", "energy_q_exp_kvarh")
_PERIOD = {
    "type": "string",
    "description": "the local hour (YYYY-MM-DDTHH:MM), day (YYYY-MM-DD) or month (YYYY-MM)",
}
_DEVICE_COUNTS = {
    "devices_estimated": {
        **_COUNT,
        "description": "devices whose energy here rests on a hole (energy_estimated)",
    },
    "devices_reset": {**_COUNT, "description": "devices whose register dropped here"},
    "devices_missing": {
        **_COUNT,
        "description": "devices of which nothing is known here (not counted in the sums)",
    },
}


def _head(extra: dict[str, Any], row: str) -> dict[str, Any]:
    return {
        "customer": {"type": "string"},
        **extra,
        "devices": {"type": "array", "items": ID, "description": "the devices summed"},
        "timezone": {"type": "string"},
        "from": {"type": "string", "description": "first day (YYYY-MM-DD) or month (YYYY-MM)"},
        "to": {"type": "string", "description": "excluded"},
        "rows": {"type": "array", "items": ref(row)},
    }


BILLING_SCHEMAS: dict[str, Any] = {
    "TotalRow": {
        "type": "object",
        "required": list(TOTAL_CSV_FIELDS),
        "properties": {
            "period": _PERIOD,
            "start": {**TIME, "description": "the period's local start, in UTC"},
            "end": {**TIME, "description": "the next period's local start, in UTC"},
            **{
                name: {
                    "type": ["number", "null"],
                    "minimum": 0,
                    "description": "the sum over the devices of the register's increase in the "
                    "period (docs/ENERGY.md); null when no device has it",
                }
                for name in _ENERGY
            },
            **_DEVICE_COUNTS,
        },
    },
    "Totals": {
        "type": "object",
        "required": [
            "customer",
            "devices",
            "resolution",
            "timezone",
            "timezone_source",
            "from",
            "to",
            "rows",
        ],
        "properties": {
            **_head(
                {
                    "site_id": ID,
                    "resolution": {"type": "string", "enum": list(RESOLUTIONS)},
                    "timezone_source": {
                        "type": "string",
                        "enum": ["parameter", "site", "sites", "default"],
                        "description": "sites: the zone all the customer's sites share; "
                        "default: UTC, for a customer without sites",
                    },
                },
                "TotalRow",
            ),
        },
    },
    "DemandRow": {
        "type": "object",
        "required": list(DEMAND_CSV_FIELDS),
        "properties": {
            "period": {"type": "string", "description": "the local day or month (YYYY-MM)"},
            "interval_start": {**TIME, "description": "start of the interval of highest demand"},
            "interval_end": TIME,
            "demand_kw": {
                "type": ["number", "null"],
                "description": "import energy of the interval / its length; null when nothing "
                "is known in the period",
            },
            "energy_kwh": {"type": ["number", "null"]},
            **_DEVICE_COUNTS,
        },
    },
    "Demand": {
        "type": "object",
        "required": ["customer", "devices", "period", "minutes", "timezone", "from", "to", "rows"],
        "properties": {
            **_head(
                {
                    "site_id": ID,
                    "device_id": ID,
                    "period": {"type": "string", "enum": ["day", "month"]},
                    "minutes": {"type": "integer", "enum": list(DEMAND_MINUTES)},
                },
                "DemandRow",
            ),
        },
    },
    "ChangeRow": {
        "type": "object",
        "required": list(CHANGE_FIELDS),
        "properties": {
            "device_id": ID,
            "site_id": {**ID, "type": ["integer", "null"]},
            "from": {
                **TIME,
                "description": "start of the span whose energy was revised (an hour)",
            },
            "to": {**TIME, "description": "its end, excluded (an hour)"},
            "revised_at": {**TIME, "description": "when the recompute changed it"},
            "zone": {"type": "string", "description": "the site's zone (UTC without one)"},
            "days": {
                "type": "array",
                "items": {"type": "string", "format": "date"},
                "description": "the local days the span touches, in `zone` (CSV: space-separated)",
            },
        },
    },
    "Changes": {
        "type": "object",
        "required": ["customer", "since", "next_since", "more", "rows"],
        "properties": {
            "customer": {"type": "string"},
            "since": TIME,
            "next_since": {**TIME, "description": "`since` for the next page or poll"},
            "more": {"type": "boolean", "description": "more revisions follow this page"},
            "rows": {"type": "array", "items": ref("ChangeRow")},
        },
    },
}


def billing_paths(prefix: str) -> dict[str, Any]:
    """The totals and demand paths under the read API's `prefix`."""
    code_param = customer_code_param()
    device = {"name": "device_id", "in": "path", "required": True, "schema": ID}
    site = {"name": "site_id", "in": "path", "required": True, "schema": ID}

    errors = {
        "400": json_response(
            "a bad parameter (named in `parameter`): id, date, month, resolution, period, "
            "minutes, time zone, or a range over the limits",
            "BadRequest",
        ),
        "404": json_response("unknown customer or site (named in `parameter`)", "NotFound"),
    }
    span = [
        query_param(
            "from",
            {"type": "string"},
            "first day YYYY-MM-DD, or month YYYY-MM for months; "
            "default: 31 days (12 months) before `to`",
        ),
        query_param("to", {"type": "string"}, "excluded; default: tomorrow (next month), local"),
        query_param("tz", {"type": "string"}, "time zone; default: the site's"),
    ]
    resolution = query_param(
        "resolution",
        {"type": "string", "enum": list(RESOLUTIONS), "default": "day"},
        f"local hours (at most the hourly range), days, or calendar months (at most {MAX_MONTHS})",
    )
    demand = [
        query_param(
            "period",
            {"type": "string", "enum": ["day", "month"], "default": "month"},
            "the peak per local day or per calendar month",
        ),
        query_param(
            "minutes",
            {"type": "integer", "enum": list(DEMAND_MINUTES), "default": 15},
            "length of the fixed intervals, from local midnight",
        ),
    ]

    def get(operation: str, summary: str, parameters: list[Any], ok: dict[str, Any]) -> Any:
        return {
            "get": {
                "operationId": operation,
                "summary": summary,
                "security": [{"adminToken": []}],
                "parameters": parameters,
                "responses": admin_responses({"200": ok, **errors}),
            }
        }

    changes = [
        {**query_param("since", TIME, "revisions after this time (the last answer's next_since)"),
         "required": True},
        query_param("device_id", ID, "only this device's"),
        query_param("site_id", ID, "only those of this site's devices"),
        query_param(
            "limit",
            {"type": "integer", "minimum": 1, "maximum": CHANGES_MAX_LIMIT, "default": 1000},
            "rows per page (a page also holds every other row of its last revised_at)",
        ),
    ]  # fmt: skip
    return {
        f"{prefix}/{{code}}/energy/changes": get(
            "energyChanges",
            "spans of energy revised after they were final (late back-fills), oldest first, "
            "with the local days they touch, for a billing export to re-issue (JSON or CSV)",
            [code_param, *changes],
            rows_response("revisions", "Changes"),
        ),
        f"{prefix}/{{code}}/energy": get(
            "customerEnergy",
            "energy of all the customer's devices per local hour, day or month (JSON or CSV)",
            [code_param, resolution, *span],
            rows_response("summed rows", "Totals"),
        ),
        f"{prefix}/{{code}}/sites/{{site_id}}/energy": get(
            "siteEnergy",
            "energy of a site's devices per local hour, day or month (JSON or CSV)",
            [code_param, site, resolution, *span],
            rows_response("summed rows", "Totals"),
        ),
        f"{prefix}/{{code}}/devices/{{device_id}}/demand": get(
            "deviceDemand",
            "peak demand of a device per local day or month (JSON or CSV)",
            [code_param, device, *demand, *span],
            rows_response("one row per period", "Demand"),
        ),
        f"{prefix}/{{code}}/sites/{{site_id}}/demand": get(
            "siteDemand",
            "peak demand of a site's summed import register per local day or month (JSON or CSV)",
            [code_param, site, *demand, *span],
            rows_response("one row per period", "Demand"),
        ),
    }
