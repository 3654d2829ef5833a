"""The read API's answers for the people who pay the bill: site and customer totals, peak demand.

    GET /api/fleet/customers/{code}/sites/{site_id}/energy     a site's devices, summed
    GET /api/fleet/customers/{code}/energy                     all the customer's devices, summed
        ?resolution=hour|day|month (default day)
        &from=&to=   YYYY-MM-DD (hour, day: local days, `to` excluded) or YYYY-MM (month)
        &tz=Area/City (default: the site's zone; for a customer, the zone its sites share)
    GET /api/fleet/customers/{code}/devices/{device_id}/demand  peak demand of a device
    GET /api/fleet/customers/{code}/sites/{site_id}/demand      of a site's summed register
        ?period=day|month (default month) &minutes=15|30|60 (default 15) &from=&to= &tz=

JSON, or CSV with `Accept: text/csv`. What the numbers mean: docs/ENERGY.md. The queries are
in `ingestd.storage.totals` and `ingestd.storage.demand`.
"""

from __future__ import annotations

import asyncio
from datetime import date, datetime, timedelta
from typing import Any

from aiohttp import web
from fleetcore.error_codes import ErrorCode
from psycopg import AsyncConnection

from ingestd.errors import BadRequest, NotFound
from ingestd.handlers.energy import answer, device_zone, site_zone, today_in
from ingestd.handlers.http import snapshot, spare_snapshot
from ingestd.handlers.params import (
    choice_param,
    customer_of,
    date_param,
    device_param,
    iso,
    month_param,
    site_param,
    timezone_param,
)
from ingestd.keys import SETTINGS
from ingestd.storage import demand as demand_store
from ingestd.storage import reads
from ingestd.storage import totals as totals_store

__all__ = [
    "DEMAND_CSV_FIELDS",
    "MAX_MONTHS",
    "TOTAL_CSV_FIELDS",
    "customer_energy",
    "device_demand",
    "site_demand",
    "site_energy",
]

MAX_MONTHS = 24
"""The most calendar months one request may cover."""
SPLIT_MIN_DEVICES = 4
"""From this many devices a total is computed on two connections (half the devices each) when
the pool has one idle: a 50-device year of days is ~0.5 s of one core, the machine has more."""

TOTAL_CSV_FIELDS = ("period", "start", "end", *totals_store.TOTAL_FIELDS[3:])
DEMAND_CSV_FIELDS = demand_store.DEMAND_FIELDS


def _add_months(first: date, months: int) -> date:
    index = first.year * 12 + first.month - 1 + months
    return date(index // 12, index % 12 + 1, 1)


def _months_between(first: date, end: date) -> int:
    return (end.year - first.year) * 12 + end.month - first.month


def _range(request: web.Request, monthly: bool, zone: str, max_days: int) -> tuple[date, date]:
    """[first, end) from `from`/`to` (months or days), checked against the limits."""
    today = today_in(zone)
    if monthly:
        this_month = today.replace(day=1)
        end = month_param(request, "to", _add_months(this_month, 1))
        first = month_param(request, "from", _add_months(end, -12))
        too_long = _months_between(first, end) > MAX_MONTHS
        limit = f"at most {MAX_MONTHS} months per request"
    else:
        end = date_param(request, "to", today + timedelta(days=1))
        first = date_param(request, "from", end - timedelta(days=31))
        too_long = (end - first).days > max_days
        limit = f"at most {max_days} days per request"
    if first >= end:
        raise BadRequest(
            ErrorCode.BAD_PARAMETER,
            "'from' must be before 'to' (which is excluded)",
            parameter="from",
        )
    if too_long:
        raise BadRequest(ErrorCode.RANGE_TOO_LARGE, limit, parameter="from")
    return first, end


async def _site(conn: AsyncConnection[Any], request: web.Request, cid: int) -> tuple[int, str]:
    site_id = site_param(request)
    zone = await totals_store.site_timezone(conn, cid, site_id)
    if zone is None:
        raise NotFound(f"no site {site_id} for this customer", parameter="site_id")
    return site_id, zone


async def _total_rows(
    request: web.Request,
    conn: AsyncConnection[Any],
    cid: int,
    devices: list[int],
    *interval: Any,
) -> list[tuple[Any, ...]]:
    """`totals_store.total_rows`, over two connections on one snapshot when it is worth it."""
    if len(devices) < SPLIT_MIN_DEVICES:
        return await totals_store.total_rows(conn, cid, devices, *interval)
    async with spare_snapshot(request, conn) as other:
        if other is None:
            return await totals_store.total_rows(conn, cid, devices, *interval)
        async with asyncio.TaskGroup() as group:
            parts = [
                group.create_task(totals_store.total_rows(c, cid, devices[k::2], *interval))
                for k, c in enumerate((conn, other))
            ]
    return totals_store.merge_totals([part.result() for part in parts])


async def _totals(
    request: web.Request,
    conn: AsyncConnection[Any],
    cid: int,
    devices: list[int],
    zone: str,
    source: str,
    body: dict[str, Any],
) -> web.StreamResponse:
    settings = request.config_dict[SETTINGS]
    resolution = choice_param(request, "resolution", totals_store.RESOLUTIONS, "day")
    max_days = (
        settings.max_hourly_range.days if resolution == "hour" else settings.max_daily_range_days
    )
    first, end = _range(request, resolution == "month", zone, max_days)
    found = await _total_rows(request, conn, cid, devices, resolution, first, end, zone)
    rows = []
    for r in found:
        row = dict(zip(totals_store.TOTAL_FIELDS, r, strict=True))
        local: datetime = row.pop("local_start")
        row["period"] = (
            local.strftime("%Y-%m")
            if resolution == "month"
            else local.date().isoformat()
            if resolution == "day"
            else local.isoformat(timespec="minutes")
        )
        row["start"], row["end"] = iso(row["start"]), iso(row["end"])
        rows.append({f: row[f] for f in TOTAL_CSV_FIELDS})
    period = (lambda d: d.strftime("%Y-%m")) if resolution == "month" else date.isoformat
    head = {
        "customer": request.match_info["code"],
        **body,
        "devices": devices,
        "resolution": resolution,
        "timezone": zone,
        "timezone_source": source,
        "from": period(first),
        "to": period(end),
    }
    return answer(request, rows, TOTAL_CSV_FIELDS, head)


async def site_energy(request: web.Request) -> web.StreamResponse:
    async with snapshot(request) as conn:
        cid = await customer_of(conn, request.match_info["code"])
        site_id, site_tz = await _site(conn, request, cid)
        asked = await timezone_param(conn, request)
        zone, source = (asked, "parameter") if asked else await site_zone(conn, site_id, site_tz)
        devices = await totals_store.site_devices(conn, cid, site_id)
        return await _totals(request, conn, cid, devices, zone, source, {"site_id": site_id})


async def customer_energy(request: web.Request) -> web.StreamResponse:
    async with snapshot(request) as conn:
        cid = await customer_of(conn, request.match_info["code"])
        asked = await timezone_param(conn, request)
        if asked:
            zone, source = asked, "parameter"
        else:
            zones = await totals_store.site_timezones(conn, cid)
            if len(zones) > 1:
                raise BadRequest(
                    ErrorCode.BAD_PARAMETER,
                    f"the customer's sites are in several time zones ({', '.join(zones)}): "
                    "pass ?tz=Area/City",
                    parameter="tz",
                )
            zone, source = ("UTC", "default") if not zones else (zones[0], "sites")
            if zones and not await reads.timezone_known(conn, zone):
                raise BadRequest(
                    ErrorCode.BAD_SITE_TIMEZONE,
                    f"the customer's sites have time zone {zone!r}, which the database does not "
                    "know; pass ?tz=Area/City",
                    parameter="tz",
                )
        devices = await totals_store.customer_devices(conn, cid)
        return await _totals(request, conn, cid, devices, zone, source, {})


async def _demand(
    request: web.Request,
    conn: AsyncConnection[Any],
    cid: int,
    devices: list[int],
    zone: str,
    body: dict[str, Any],
) -> web.StreamResponse:
    settings = request.config_dict[SETTINGS]
    period = choice_param(request, "period", ("day", "month"), "month")
    minutes = int(
        choice_param(request, "minutes", tuple(map(str, demand_store.DEMAND_MINUTES)), "15")
    )
    first, end = _range(request, period == "month", zone, settings.max_daily_range_days)
    found = await demand_store.peak_demand_rows(
        conn, cid, devices, first, end, zone, minutes, monthly=period == "month"
    )
    rows = []
    for r in found:
        row = dict(zip(demand_store.DEMAND_FIELDS, r, strict=True))
        when: date = row["period"]
        row["period"] = when.strftime("%Y-%m") if period == "month" else when.isoformat()
        row["interval_start"], row["interval_end"] = (
            iso(row["interval_start"]),
            iso(row["interval_end"]),
        )
        rows.append(row)
    head = {
        "customer": request.match_info["code"],
        **body,
        "devices": devices,
        "period": period,
        "minutes": minutes,
        "timezone": zone,
        "from": first.strftime("%Y-%m") if period == "month" else first.isoformat(),
        "to": end.strftime("%Y-%m") if period == "month" else end.isoformat(),
    }
    return answer(request, rows, DEMAND_CSV_FIELDS, head)


async def device_demand(request: web.Request) -> web.StreamResponse:
    device_id = device_param(request)
    async with snapshot(request) as conn:
        cid = await customer_of(conn, request.match_info["code"])
        zone, _ = await device_zone(request, conn, cid, device_id)
        return await _demand(request, conn, cid, [device_id], zone, {"device_id": device_id})


async def site_demand(request: web.Request) -> web.StreamResponse:
    async with snapshot(request) as conn:
        cid = await customer_of(conn, request.match_info["code"])
        site_id, site_tz = await _site(conn, request, cid)
        asked = await timezone_param(conn, request)
        zone = asked or (await site_zone(conn, site_id, site_tz))[0]
        devices = await totals_store.site_devices(conn, cid, site_id)
        return await _demand(request, conn, cid, devices, zone, {"site_id": site_id})
