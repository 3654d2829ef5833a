"""The energy part of the OpenAPI document: hourly and daily energy, completeness (docs/ENERGY.md).

Kept beside `ingestd.openapi`, which merges these schemas and paths into the one document; the
field lists come from the queries' own column constants, so a new column changes the document.
"""

from __future__ import annotations

from typing import Any

from ingestd.fleetstate import METER_STATES
from ingestd.handlers.energy import DAILY_CSV_FIELDS, HOURLY_CSV_FIELDS, MAX_GAPS
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

__all__ = ["ENERGY_SCHEMAS", "energy_paths"]

_NUMBER = {"type": ["number", "null"]}
_ENERGY = ("energy_imp_kwh", "energy_exp_kwh", "energy_q_imp_kvarh", "energy_q_exp_kvarh")


def _energy_fields(what: str) -> dict[str, Any]:
    return {
        **{
            name: {
                "type": ["number", "null"],
                "minimum": 0,
                "description": f"the register's increase in the {what} (docs/ENERGY.md); null when "
                "nothing is known of the register there",
            }
            for name in _ENERGY
        },
        "energy_reset": {
            "type": "boolean",
            "description": "the energy includes a drop of a register (reset, roll-over, swap): "
            "the increase across it is the new value",
        },
        "energy_estimated": {
            "type": "boolean",
            "description": "the energy rests on a spacing between samples longer than 1.5 "
            "usual intervals (a hole), interpolated",
        },
        "expected_samples": {
            **_NUMBER,
            "description": f"the {what}'s length / the device's usual sampling interval",
        },
    }


_AVERAGES = {name: _NUMBER for name in HOURLY_CSV_FIELDS if name.endswith(("_avg", "_min", "_max"))}

ENERGY_SCHEMAS: dict[str, Any] = {
    "HourlyRow": {
        "type": "object",
        "required": list(HOURLY_CSV_FIELDS),
        "properties": {
            "bucket": TIME,
            "samples": {
                "type": "integer",
                "minimum": 0,
                "description": "0 for an hour inside a hole (energy interpolated, averages null)",
            },
            **_AVERAGES,
            **_energy_fields("hour"),
        },
    },
    "HourlyRows": {
        "type": "object",
        "required": ["customer", "device_id", "from", "to", "rows"],
        "properties": {
            "customer": {"type": "string"},
            "device_id": ID,
            "from": TIME,
            "to": TIME,
            "rows": {"type": "array", "items": ref("HourlyRow")},
        },
    },
    "DailyRow": {
        "type": "object",
        "required": list(DAILY_CSV_FIELDS),
        "properties": {
            "day": {"type": "string", "format": "date"},
            "day_start": {**TIME, "description": "local midnight, in UTC"},
            "day_end": {**TIME, "description": "the next local midnight, in UTC"},
            "hours": {"type": "number", "description": "23 or 25 on daylight-saving days"},
            "samples": {"type": "integer", "minimum": 0},
            **_AVERAGES,
            **_energy_fields("day"),
        },
    },
    "DailyRows": {
        "type": "object",
        "required": ["customer", "device_id", "timezone", "timezone_source", "from", "to", "rows"],
        "properties": {
            "customer": {"type": "string"},
            "device_id": ID,
            "timezone": {"type": "string"},
            "timezone_source": {
                "type": "string",
                "enum": ["parameter", "site", "default"],
                "description": "default: UTC, for a device (or site) not sent yet",
            },
            "from": {"type": "string", "format": "date"},
            "to": {"type": "string", "format": "date", "description": "excluded"},
            "rows": {"type": "array", "items": ref("DailyRow")},
        },
    },
    "DeviceCompleteness": {
        "type": "object",
        "required": [
            "device_id",
            "site_id",
            "name",
            "deleted",
            "usual_interval_s",
            "samples",
            "expected_samples",
            "coverage",
            "first_sample_at",
            "last_sample_at",
            "gaps_total",
            "gap_seconds_total",
            "gaps",
            "state",
        ],
        "properties": {
            "device_id": ID,
            "site_id": {"type": ["integer", "null"]},
            "name": {"type": ["string", "null"]},
            "deleted": {"type": "boolean"},
            "usual_interval_s": {
                **_NUMBER,
                "description": "median of the hours' mean sample spacing (docs/ENERGY.md)",
            },
            "samples": {"type": "integer", "minimum": 0},
            "expected_samples": {
                **_NUMBER,
                "description": "from max(from, first sample ever) to min(to, now) at the usual interval",
            },
            "coverage": {**_NUMBER, "description": "samples / expected_samples"},
            "first_sample_at": {"type": ["string", "null"], "format": "date-time"},
            "last_sample_at": {
                "type": ["string", "null"],
                "format": "date-time",
                "description": "the device's last sample ever",
            },
            "state": {
                "type": ["string", "null"],
                "enum": [*METER_STATES, None],
                "description": "the meter's state now (docs/OPERATIONS.md, Fleet); null for a "
                "device no longer in the devices full set",
            },
            "gaps_total": {"type": "integer", "minimum": 0},
            "gap_seconds_total": {"type": "number", "minimum": 0},
            "gaps": {
                "type": "array",
                "maxItems": MAX_GAPS,
                "items": {
                    "type": "object",
                    "required": ["from", "to", "seconds", "ongoing"],
                    "properties": {
                        "from": TIME,
                        "to": TIME,
                        "seconds": {"type": "number"},
                        "ongoing": {
                            "type": "boolean",
                            "description": "no sample since `from` (up to min(to, now))",
                        },
                    },
                },
            },
        },
    },
    "Completeness": {
        "type": "object",
        "required": ["customer", "from", "to", "gap_factor", "devices"],
        "properties": {
            "customer": {"type": "string"},
            "from": TIME,
            "to": TIME,
            "gap_factor": {
                "type": "number",
                "description": "gaps listed: silences longer than this many usual intervals",
            },
            "devices": {"type": "array", "items": ref("DeviceCompleteness")},
        },
    },
}


def energy_paths(prefix: str) -> dict[str, Any]:
    """The hourly, daily and completeness paths under the read API's `prefix`."""
    code_param = customer_code_param()
    device = {"name": "device_id", "in": "path", "required": True, "schema": ID}

    errors = {
        "400": json_response("bad device id, parameter, time zone or range", "BadRequest"),
        "404": json_response("unknown customer", "NotFound"),
    }
    date = {"type": "string", "format": "date"}
    return {
        f"{prefix}/{{code}}/devices/{{device_id}}/hourly": {
            "get": {
                "operationId": "hourly",
                "summary": "energy and averages per hour of one device (JSON, or CSV with Accept: text/csv)",
                "security": [{"adminToken": []}],
                "parameters": [
                    code_param,
                    device,
                    query_param(
                        "from", TIME, "hours starting at or after; default: `to` minus 24 h"
                    ),
                    query_param("to", TIME, "exclusive; default: now"),
                ],
                "responses": admin_responses(
                    {"200": rows_response("hourly rows", "HourlyRows"), **errors}
                ),
            }
        },
        f"{prefix}/{{code}}/devices/{{device_id}}/daily": {
            "get": {
                "operationId": "daily",
                "summary": "energy and averages per local day of one device (JSON, or CSV with Accept: text/csv)",
                "security": [{"adminToken": []}],
                "parameters": [
                    code_param,
                    device,
                    query_param("from", date, "first day; default: `to` minus 31 days"),
                    query_param("to", date, "day after the last; default: tomorrow"),
                    query_param(
                        "tz", {"type": "string"}, "time zone; default: the device's site's"
                    ),
                ],
                "responses": admin_responses(
                    {"200": rows_response("daily rows", "DailyRows"), **errors}
                ),
            }
        },
        f"{prefix}/{{code}}/completeness": {
            "get": {
                "operationId": "completeness",
                "summary": "per device: usual interval, samples received vs expected, gaps",
                "security": [{"adminToken": []}],
                "parameters": [
                    code_param,
                    query_param("from", TIME, "widened to the hour; default: `to` minus 24 h"),
                    query_param("to", TIME, "widened to the hour; default: now"),
                ],
                "responses": admin_responses(
                    {"200": json_response("completeness per device", "Completeness"), **errors}
                ),
            }
        },
    }
