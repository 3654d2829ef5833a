"""The fleet view, behind the admin token: every gateway's latest report and its states.

    GET /api/fleet/gateways[?state=silent,blocked][&customer=CODE]    all gateways
    GET /api/fleet/customers/{code}/gateways                          one customer's, with its meters

States are decided by `ingestd.fleetstate` at the time of the request (a gateway that stopped
shows `silent` as soon as its heartbeat is overdue, whatever the housekeeping last stored); a
`state` filter keeps the gateways having any of the states named. Meter states in the fleet view
are the housekeeping's latest (`fleet.device_states`, refreshed every
INGESTD_FLEET_STATE_INTERVAL_S); the per-customer view and the completeness report derive them
at the time of the request.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from fleetcore.error_codes import ErrorCode
from psycopg import AsyncConnection

from ingestd.errors import BadRequest
from ingestd.fleetstate import GATEWAY_STATES, HealthPolicy, gateway_states, meter_state
from ingestd.fleetstate import silent_after_s as _silent_after_s
from ingestd.handlers.http import snapshot
from ingestd.handlers.params import customer_filter, customer_of, iso
from ingestd.keys import SETTINGS
from ingestd.storage.gateways import gateway_rows
from ingestd.storage.meters import meter_rows, stored_device_states

__all__ = ["customer_gateways", "gateway_view", "list_gateways", "live_meter_states"]

_SHOWN = (
    "host", "version", "wire_format", "push_interval_s", "heartbeat_s", "backlog_rows", "lag_s",
    "oldest_unshipped_age_s", "failures", "last_error", "quarantined_rows", "blocking_age_s",
    "db_bytes", "disk_free_bytes", "clock_offset_s", "upload_cap", "sent_bytes", "reports",
)  # fmt: skip


def gateway_view(row: dict[str, Any], now: datetime, policy: HealthPolicy) -> dict[str, Any]:
    """One gateway as the read API shows it."""
    view: dict[str, Any] = {
        "customer": row["customer"],
        "token_hint": row["token_hint"],
        "states": gateway_states(row, now, policy),
        "last_report_at": iso(row["last_report_at"]),
        "last_contact_at": iso(max(row["last_contact_at"], row["last_report_at"])),
        "seconds_since_report": round((now - row["last_report_at"]).total_seconds(), 3),
        "silent_after_s": _silent_after_s(row["heartbeat_s"], policy),
        "first_report_at": iso(row["first_report_at"]),
        "started_at": iso(row["started_at"]),
    }
    view.update({name: row[name] for name in _SHOWN})
    view["implausible"] = list(row["implausible"])
    return view


_FLEET_PARAMS = ("state", "customer")


def _state_filter(request: web.Request) -> set[str]:
    extra = sorted(set(request.query) - set(_FLEET_PARAMS))
    if extra:  # a misspelt filter must not silently show the whole fleet
        raise BadRequest(
            ErrorCode.BAD_PARAMETER,
            f"unknown parameter {extra[0]!r}; the fleet view takes {', '.join(_FLEET_PARAMS)}",
            parameter=extra[0],
        )
    raw = request.query.get("state", "")
    wanted = {s.strip() for s in raw.split(",") if s.strip()}
    unknown = wanted - set(GATEWAY_STATES)
    if unknown:
        raise BadRequest(
            ErrorCode.BAD_PARAMETER,
            f"unknown state {sorted(unknown)[0]!r}; one of {', '.join(GATEWAY_STATES)}",
        )
    return wanted


def _counts(views: list[dict[str, Any]]) -> dict[str, int]:
    counts = dict.fromkeys(GATEWAY_STATES, 0)
    for view in views:
        for state in view["states"]:
            counts[state] += 1
    return counts


async def list_gateways(request: web.Request) -> web.Response:
    policy = request.config_dict[SETTINGS].health
    wanted = _state_filter(request)
    customer = customer_filter(request)
    now = datetime.now(UTC)
    async with snapshot(request) as conn:
        rows = await gateway_rows(conn, customer)
        stored = await stored_device_states(conn)
    meters: dict[int, list[dict[str, Any]]] = {}
    for customer_id, device_id, state, since in stored:
        meters.setdefault(customer_id, []).append(
            {"device_id": device_id, "state": state, "since": iso(since)}
        )
    views = []
    for row in rows:
        view = gateway_view(row, now, policy)
        view["meters_not_ok"] = meters.get(row["customer_id"], [])
        views.append(view)
    shown = (
        [v for v in views if wanted & set(v["states"])]
        if wanted
        else [v for v in views if v["states"] != ["retired"]]
    )
    return web.json_response(
        {"generated_at": iso(now), "counts": _counts(views), "gateways": shown}
    )


async def live_meter_states(
    conn: AsyncConnection[Any],
    code: str,
    customer_id: int,
    policy: HealthPolicy,
    stale_after_s: float,
) -> dict[int, dict[str, Any]]:
    """Per live device of the customer: its state now and what it rests on."""
    now = datetime.now(UTC)
    mine = await gateway_rows(conn, code)
    found = await meter_rows(
        conn,
        customer=customer_id,
        frozen_min_kw=policy.meter_frozen_min_kw,
        rated_kw=policy.meter_rated_kw,
    )
    if mine:
        reporting = any(
            not {"silent", "retired"} & set(gateway_states(g, now, policy)) for g in mine
        )
    else:  # a customer whose pushers send no reports: its batches tell whether it is there
        seen = found[0]["customer_seen_at"] if found else None
        reporting = seen is not None and (now - seen).total_seconds() <= stale_after_s
    return {
        m["device_id"]: {
            "state": meter_state(m, now, reporting, policy),
            "last_sample_at": iso(m["last_sample_at"]),
            "usual_interval_s": m["usual_interval_s"],
        }
        for m in found
    }


async def customer_gateways(request: web.Request) -> web.Response:
    settings = request.config_dict[SETTINGS]
    code = request.match_info["code"]
    now = datetime.now(UTC)
    async with snapshot(request) as conn:
        cid = await customer_of(conn, code)
        rows = await gateway_rows(conn, code)
        meters = await live_meter_states(
            conn, code, cid, settings.health, settings.stale_device_after.total_seconds()
        )
    views = [gateway_view(row, now, settings.health) for row in rows]
    return web.json_response(
        {
            "customer": code,
            "generated_at": iso(now),
            "gateways": views,
            "meters": [{"device_id": device, **state} for device, state in meters.items()],
        }
    )
