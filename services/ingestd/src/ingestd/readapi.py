"""The operators' read API, behind the admin token.

    GET /api/fleet/customers                                          customers and their health
    GET /api/fleet/customers/{code}/devices                           sites and devices
    GET /api/fleet/customers/{code}/devices/{device_id}/hourly        hourly aggregate rows
        ?from=<RFC 3339>&to=<RFC 3339>   (default: the last 24 h; at most INGESTD_MAX_HOURLY_RANGE_DAYS)
        Accept: text/csv for CSV, JSON otherwise

The admin token comes from INGESTD_ADMIN_TOKEN (a secret, at least 32 characters), is sent as
`Authorization: Bearer <token>` and compared in constant time. Customer push tokens never open
this API. Without INGESTD_ADMIN_TOKEN the API answers 403 admin_api_disabled.
"""

from __future__ import annotations

import csv
import hmac
import io
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

from ingestd.errors import AdminDisabled, BadRequest, NotFound, Unauthorized
from ingestd.keys import POOL, SETTINGS

__all__ = ["add_read_routes"]

CUSTOMERS = """
SELECT c.code, c.name, c.created_at, c.first_seen_at, c.last_seen_at,
       extract(epoch FROM now() - c.last_seen_at)::double precision,
       coalesce((SELECT sum(e.accepted) FROM fleet.ingest_events e
                 WHERE e.customer_id = c.id AND e.batch_type = 'measurements'
                   AND e.received_at > now() - interval '24 hours'), 0)::bigint,
       (SELECT count(*) FROM fleet.rejected_rows r
         WHERE r.customer_id = c.id AND r.received_at > now() - interval '24 hours')
FROM fleet.customers c ORDER BY c.code
"""
CUSTOMER_ID = "SELECT id FROM fleet.customers WHERE code = %s"
SITES = """SELECT id, name, timezone, address, updated_at, deleted_at
           FROM fleet.sites WHERE customer_id = %s ORDER BY id"""
DEVICES = """SELECT id, site_id, serial_number, model, name, updated_at, deleted_at
             FROM fleet.devices WHERE customer_id = %s ORDER BY id"""
HOURLY = """
SELECT bucket, samples, p_total_avg, p_total_min, p_total_max, v1_avg, v2_avg, v3_avg,
       i1_avg, i2_avg, i3_avg, pf_total_avg, freq_avg, energy_imp_kwh, energy_exp_kwh
FROM fleet.hourly_per_device
WHERE customer_id = %s AND device_id = %s AND bucket >= %s AND bucket < %s
ORDER BY bucket
"""
HOURLY_FIELDS = (
    "bucket", "samples", "p_total_avg", "p_total_min", "p_total_max", "v1_avg", "v2_avg", "v3_avg",
    "i1_avg", "i2_avg", "i3_avg", "pf_total_avg", "freq_avg", "energy_imp_kwh", "energy_exp_kwh",
)  # fmt: skip
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


def add_read_routes(app: web.Application) -> None:
    """Register the read API on `app`."""

    async def customer_id(conn: Any, code: str) -> int:
        cur = await conn.execute(CUSTOMER_ID, (code,))
        row = await cur.fetchone()
        if row is None:
            raise NotFound(f"no customer with code {code!r}")
        return int(row[0])

    def connection(request: web.Request) -> Any:
        settings = request.app[SETTINGS]
        require_admin(request, settings.admin_token)
        return request.app[POOL].connection(timeout=settings.pool_timeout_s)

    async def list_customers(request: web.Request) -> web.Response:
        async with connection(request) as conn:
            cur = await conn.execute(CUSTOMERS)
            rows = await cur.fetchall()
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
            cid = await customer_id(conn, code)
            sites = await (await conn.execute(SITES, (cid,))).fetchall()
            devices = await (await conn.execute(DEVICES, (cid,))).fetchall()
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
        settings = request.app[SETTINGS]
        require_admin(request, settings.admin_token)  # before looking at any parameter
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
            cid = await customer_id(conn, code)
            cur = await conn.execute(HOURLY, (cid, device_id, start, to))
            rows = [_hourly_row(r) for r in await cur.fetchall()]
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

    app.router.add_get("/api/fleet/customers", list_customers)
    app.router.add_get("/api/fleet/customers/{code}/devices", list_devices)
    app.router.add_get("/api/fleet/customers/{code}/devices/{device_id}/hourly", hourly)
