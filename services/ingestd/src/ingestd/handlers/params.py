"""Query and path parameters of the read API, checked: a bad one is a 400 that names it."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from aiohttp import web
from psycopg import AsyncConnection

from ingestd.errors import BadRequest, NotFound
from ingestd.storage import reads

__all__ = ["customer_of", "date_param", "device_param", "iso", "time_param"]


def iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z") if value else None


def time_param(request: web.Request, name: str, default: datetime) -> datetime:
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


def date_param(request: web.Request, name: str, default: date) -> date:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        if len(raw) != 10:
            raise ValueError(raw)
        return date.fromisoformat(raw)
    except ValueError:
        raise BadRequest(
            "bad_parameter", f"{name!r} must be a date YYYY-MM-DD, got {raw!r}"
        ) from None


def device_param(request: web.Request) -> int:
    raw = request.match_info["device_id"]
    if not raw.isdigit() or int(raw) >= 2**63:
        raise BadRequest("bad_parameter", f"device_id must be a non-negative integer, got {raw!r}")
    return int(raw)


async def customer_of(conn: AsyncConnection[Any], code: str) -> int:
    found = await reads.customer_id(conn, code)
    if found is None:
        raise NotFound(f"no customer with code {code!r}")
    return found
