"""The operators' read API: a sub-application behind the admin token.

    GET /api/fleet/customers                                          customers and their health
    GET /api/fleet/customers/{code}/devices                           sites and devices
    GET /api/fleet/customers/{code}/devices/{device_id}/hourly        hourly aggregate rows
        ?from=<RFC 3339>&to=<RFC 3339>   (default: the last 24 h; at most INGESTD_MAX_HOURLY_RANGE_DAYS)
        Accept: text/csv for CSV, JSON otherwise

The admin token comes from INGESTD_ADMIN_TOKEN (a secret, at least 32 characters), is sent as
`Authorization: Bearer <token>` and checked, in constant time, by the sub-application's one
middleware before any handler looks at a parameter (so an unauthenticated request gets 401, never
a 400 that would tell what the API accepts). Customer push tokens never open this API. Without
INGESTD_ADMIN_TOKEN the API answers 403 admin_api_disabled. The queries are in
`ingestd.storage.reads`.
"""

from __future__ import annotations

import csv
import hmac
import io
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web
from fleetcore.protocol import API_PREFIX
from psycopg import AsyncConnection

from ingestd.errors import AdminDisabled, BadRequest, NotFound, Unauthorized
from ingestd.handlers.http import Handler, connection
from ingestd.keys import SETTINGS
from ingestd.storage import reads
from ingestd.storage.reads import HOURLY_FIELDS

__all__ = ["ADMIN_PREFIX", "CSV_FIELDS", "create_admin_app"]

ADMIN_PREFIX = f"{API_PREFIX}/customers"
CSV_FIELDS = (*HOURLY_FIELDS, "energy_reset")


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z") if value else None


def require_admin(request: web.Request, admin_token: str | None) -> None:
    """Constant-time check of `Authorization: Bearer <admin token>`."""
    if admin_token is None:
        raise AdminDisabled("set INGESTD_ADMIN_TOKEN to enable the read API")
    header = request.headers.get("Authorization", "")
    scheme, _, presented = header.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        presented.strip().encode(), admin_token.encode()
    ):
        raise Unauthorized()


@web.middleware
async def admin_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every read-API route requires the admin token; unknown paths and methods keep their
    404/405 (the router's answer comes before authentication, as for the rest of the API)."""
    if request.match_info.http_exception is None:
        require_admin(request, request.config_dict[SETTINGS].admin_token)
    return await handler(request)


def _time_param(request: web.Request, name: str, default: datetime) -> datetime:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        # An unescaped "+" in a query string arrives as a space.
        value = datetime.fromisoformat(raw.replace(" ", "+"))
    except ValueError:
        raise BadRequest(
            "bad_parameter", f"{name!r} must be an RFC 3339 time with offset, got {raw!r}"
        ) from None
    if value.tzinfo is None:
        raise BadRequest(
            "bad_parameter", f"{name!r} must carry a UTC offset (e.g. 2026-11-26T00:00:00Z)"
        )
    return value


def _hourly_row(row: tuple[Any, ...]) -> dict[str, Any]:
    out = dict(zip(HOURLY_FIELDS, row, strict=True))
    out["bucket"] = _iso(out["bucket"])
    reset = False
    for column in ("energy_imp_kwh", "energy_exp_kwh"):
        if out[column] is not None and out[column] < 0:  # register reset inside the hour
            out[column] = None
            reset = True
    out["energy_reset"] = reset
    return out


async def _customer_id(conn: AsyncConnection[Any], code: str) -> int:
    found = await reads.customer_id(conn, code)
    if found is None:
        raise NotFound(f"no customer with code {code!r}")
    return found


async def list_customers(request: web.Request) -> web.Response:
    async with connection(request) as conn:
        rows = await reads.customer_summaries(conn)
    customers = [
        {
            "code": r[0],
            "name": r[1],
            "created_at": _iso(r[2]),
            "first_seen_at": _iso(r[3]),
            "last_seen_at": _iso(r[4]),
            "seconds_since_last_batch": round(r[5], 3) if r[5] is not None else None,
            "rows_24h": int(r[6]),
            "rejected_24h": int(r[7]),
        }
        for r in rows
    ]
    return web.json_response({"customers": customers})


async def list_devices(request: web.Request) -> web.Response:
    code = request.match_info["code"]
    async with connection(request) as conn:
        cid = await _customer_id(conn, code)
        sites = await reads.sites_of(conn, cid)
        devices = await reads.devices_of(conn, cid)
    return web.json_response(
        {
            "customer": code,
            "sites": [
                {
                    "id": r[0],
                    "name": r[1],
                    "timezone": r[2],
                    "address": r[3],
                    "updated_at": _iso(r[4]),
                    "deleted": r[5] is not None,
                    "deleted_at": _iso(r[5]),
                }
                for r in sites
            ],
            "devices": [
                {
                    "id": r[0],
                    "site_id": r[1],
                    "serial_number": r[2],
                    "model": r[3],
                    "name": r[4],
                    "updated_at": _iso(r[5]),
                    "deleted": r[6] is not None,
                    "deleted_at": _iso(r[6]),
                }
                for r in devices
            ],
        }
    )


async def hourly(request: web.Request) -> web.StreamResponse:
    settings = request.config_dict[SETTINGS]
    code = request.match_info["code"]
    raw_device = request.match_info["device_id"]
    if not raw_device.isdigit() or int(raw_device) >= 2**63:
        raise BadRequest(
            "bad_parameter", f"device_id must be a non-negative integer, got {raw_device!r}"
        )
    device_id = int(raw_device)
    now = datetime.now(UTC)
    to = _time_param(request, "to", now)
    start = _time_param(request, "from", to - timedelta(hours=24))
    if start >= to:
        raise BadRequest("bad_parameter", "'from' must be before 'to'")
    if to - start > settings.max_hourly_range:
        raise BadRequest(
            "range_too_large", f"at most {settings.max_hourly_range.days} days per request"
        )
    async with connection(request) as conn:
        cid = await _customer_id(conn, code)
        rows = [_hourly_row(r) for r in await reads.hourly_rows(conn, cid, device_id, start, to)]
    if "text/csv" in request.headers.get("Accept", ""):
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=CSV_FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return web.Response(text=buffer.getvalue(), content_type="text/csv")
    return web.json_response(
        {
            "customer": code,
            "device_id": device_id,
            "from": _iso(start),
            "to": _iso(to),
            "rows": rows,
        }
    )


def create_admin_app() -> web.Application:
    """The read API, to mount with `app.add_subapp(ADMIN_PREFIX, create_admin_app())`; it reads
    the settings and the pool from the parent application."""
    admin = web.Application(middlewares=[admin_auth])
    admin.router.add_get("", list_customers)
    admin.router.add_get("/{code}/devices", list_devices)
    admin.router.add_get("/{code}/devices/{device_id}/hourly", hourly)
    return admin
