"""The operators' read API: a sub-application behind the admin token.

    GET /api/fleet/customers                                          customers and their health
    GET /api/fleet/customers/{code}/devices                           sites and devices
    GET /api/fleet/customers/{code}/reconciliation                    digests compared, repairs
    GET …/{code}/devices/{device_id}/hourly, …/daily, …/{code}/completeness   (handlers/energy.py)
    GET …/{code}/energy, …/{code}/sites/{site_id}/energy, …/demand            (handlers/billing.py)
    GET /api/fleet/gateways, …/{code}/gateways                        the fleet view (handlers/fleet.py)

The admin token comes from INGESTD_ADMIN_TOKEN (a secret, at least 32 characters), is sent as
`Authorization: Bearer <token>` and checked, in constant time, by the sub-application's one
middleware before any handler looks at a parameter (so an unauthenticated request gets 401, never
a 400 that would tell what the API accepts). Customer push tokens never open this API. Without
INGESTD_ADMIN_TOKEN the API answers 403 admin_api_disabled. The queries are in
`ingestd.storage.reads`.
"""

from __future__ import annotations

import hashlib
import hmac
import time

import structlog
from aiohttp import web
from fleetcore.protocol import API_PREFIX

from ingestd.errors import AdminDisabled, IngestError, RateLimited, Unauthorized
from ingestd.handlers import billing, corrections, energy, fleet
from ingestd.handlers.http import Handler, budget_address, snapshot
from ingestd.handlers.params import customer_of
from ingestd.handlers.params import iso as _iso
from ingestd.keys import AUTH_LIMITER, METRICS, SETTINGS
from ingestd.ratelimit import RateLimiter
from ingestd.storage import reads
from ingestd.storage.digests import reconciliation_summary

__all__ = ["ADMIN_PREFIX", "FLEET_PREFIX", "create_admin_app", "create_fleet_app"]

ADMIN_PREFIX = f"{API_PREFIX}/customers"

log = structlog.get_logger("ingestd")
FLEET_PREFIX = f"{API_PREFIX}/gateways"


def require_admin(request: web.Request, admin_token: str | None) -> None:
    """Constant-time check of `Authorization: Bearer <admin token>`."""
    if admin_token is None:
        raise AdminDisabled("set INGESTD_ADMIN_TOKEN to enable the read API")
    header = request.headers.get("Authorization", "")
    scheme, _, presented = header.partition(" ")
    # Header bytes that are not UTF-8 arrive as surrogates: compared as the bytes they were.
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        presented.strip().encode("utf-8", "surrogatepass"), admin_token.encode()
    ):
        raise Unauthorized()


def _check_admin(request: web.Request) -> None:
    """The admin token, under the same failed-authentication budget per client address as push
    tokens (429 past it); every failure is logged with the address and counted."""
    address = budget_address(request)
    limiter = request.config_dict[AUTH_LIMITER]
    presented = request.headers.get("Authorization", "").encode("utf-8", "surrogatepass")
    pass_key = hashlib.sha256(b"admin:" + presented).digest()  # the right token keeps its pass
    wait = limiter.wait(address, pass_key)
    if wait > 0:
        raise RateLimited(
            RateLimiter.retry_after(wait), "too many failed authentications from this address"
        )
    try:
        require_admin(request, request.config_dict[SETTINGS].admin_token)
    except Unauthorized:
        limiter.failed(address)
        request.config_dict[METRICS].auth_failures.inc()
        log.warning("admin_auth_failed", client=address, path=request.path)
        raise
    limiter.succeeded(pass_key)


@web.middleware
async def admin_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every read-API route requires the admin token; unknown paths and methods keep their
    404/405 (the router's answer comes before authentication, as for the rest of the API).
    One access-log line per request: client, path, status, duration."""
    started = time.perf_counter()
    status = 500
    try:
        if request.match_info.http_exception is None:
            _check_admin(request)
        response = await handler(request)
        status = response.status
        return response
    except IngestError as exc:
        status = exc.status
        raise
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        log.info(
            "read_api",
            client=budget_address(request),
            method=request.method,
            path=request.path,
            status=status,
            duration_ms=round((time.perf_counter() - started) * 1000, 2),
        )


async def list_customers(request: web.Request) -> web.Response:
    stale_after = request.config_dict[SETTINGS].stale_device_after
    async with snapshot(request) as conn:
        rows = await reads.customer_summaries(conn, stale_after)
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
            "devices": int(r[8]),
            "stale_devices": int(r[9]),
        }
        for r in rows
    ]
    return web.json_response(
        {"stale_after_minutes": stale_after.total_seconds() / 60, "customers": customers}
    )


async def list_devices(request: web.Request) -> web.Response:
    code = request.match_info["code"]
    async with snapshot(request) as conn:
        cid = await customer_of(conn, code)
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


async def customer_reconciliation(request: web.Request) -> web.Response:
    """The customer's last digest exchange and the batches its pusher re-sent to repair losses
    (those still in the audit trail, INGESTD_AUDIT_RETENTION_DAYS)."""
    code = request.match_info["code"]
    async with snapshot(request) as conn:
        cid = await customer_of(conn, code)
        summary = await reconciliation_summary(conn, cid)
    answer: dict[str, object] = {"customer": code}
    for name, value in summary.items():
        answer[name] = (
            _iso(value) if name.endswith("_at") else (int(value) if value is not None else None)
        )
    return web.json_response(answer)


def create_admin_app() -> web.Application:
    """The read API, to mount with `app.add_subapp(ADMIN_PREFIX, create_admin_app())`; it reads
    the settings and the pool from the parent application."""
    admin = web.Application(middlewares=[admin_auth])
    admin.router.add_get("", list_customers)
    admin.router.add_get("/{code}/devices", list_devices)
    admin.router.add_get("/{code}/reconciliation", customer_reconciliation)
    admin.router.add_get("/{code}/devices/{device_id}/hourly", energy.hourly)
    admin.router.add_get("/{code}/devices/{device_id}/daily", energy.daily)
    admin.router.add_get("/{code}/completeness", energy.completeness)
    admin.router.add_get("/{code}/energy", billing.customer_energy)
    admin.router.add_get("/{code}/energy/changes", corrections.energy_changes)
    admin.router.add_get("/{code}/sites/{site_id}/energy", billing.site_energy)
    admin.router.add_get("/{code}/devices/{device_id}/demand", billing.device_demand)
    admin.router.add_get("/{code}/sites/{site_id}/demand", billing.site_demand)
    admin.router.add_get("/{code}/gateways", fleet.customer_gateways)
    return admin


def create_fleet_app() -> web.Application:
    """The fleet view (`handlers.fleet`), behind the same admin token; mount at FLEET_PREFIX."""
    app = web.Application(middlewares=[admin_auth])
    app.router.add_get("", fleet.list_gateways)
    return app
