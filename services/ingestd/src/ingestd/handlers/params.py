"""Query and path parameters of the read API, checked: a bad one is a 400 that names it."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

from aiohttp import web
from fleetcore.error_codes import ErrorCode
from psycopg import AsyncConnection

from ingestd.errors import BadRequest, NotFound
from ingestd.storage import reads

__all__ = [
    "choice_param",
    "customer_filter",
    "customer_of",
    "date_param",
    "device_param",
    "hours_param",
    "iso",
    "month_param",
    "site_param",
    "time_param",
    "timezone_param",
]


# Times and dates a request may name: a range computed from them (a default 'from' a day or a
# month before 'to') and their UTC instant must stay within what datetime can hold.
_EARLIEST = datetime(2, 1, 1, tzinfo=UTC)
_LATEST = datetime(9998, 12, 31, tzinfo=UTC)
_YEARS = "2-9998"


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # surrogates: bytes of the request that were not UTF-8
        return False
    return True


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
            ErrorCode.BAD_PARAMETER,
            f"{name!r} must be an RFC 3339 time with offset, got {raw!r}",
            parameter=name,
        ) from None
    if value.tzinfo is None:
        raise BadRequest(
            ErrorCode.BAD_PARAMETER,
            f"{name!r} must carry a UTC offset (e.g. 2026-11-26T00:00:00Z)",
            parameter=name,
        )
    if not _EARLIEST <= value <= _LATEST:  # comparing aware times never overflows
        raise BadRequest(
            ErrorCode.BAD_PARAMETER,
            f"{name!r} must lie within years {_YEARS}, got {raw!r}",
            parameter=name,
        )
    return value


def date_param(request: web.Request, name: str, default: date) -> date:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        if len(raw) != 10:
            raise ValueError(raw)
        value = date.fromisoformat(raw)
        if not _EARLIEST.date() <= value <= _LATEST.date():
            raise ValueError(raw)
        return value
    except ValueError:
        raise BadRequest(
            ErrorCode.BAD_PARAMETER,
            f"{name!r} must be a date YYYY-MM-DD within years {_YEARS}, got {raw!r}",
            parameter=name,
        ) from None


def month_param(request: web.Request, name: str, default: date) -> date:
    """A calendar month YYYY-MM, as its first day."""
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        if len(raw) != 7 or raw[4] != "-" or not (raw[:4] + raw[5:]).isdigit():
            raise ValueError(raw)
        value = date(int(raw[:4]), int(raw[5:]), 1)
        if not _EARLIEST.date() <= value <= _LATEST.date():
            raise ValueError(raw)
        return value
    except ValueError:
        raise BadRequest(
            ErrorCode.BAD_PARAMETER,
            f"{name!r} must be a month YYYY-MM within years {_YEARS}, got {raw!r}",
            parameter=name,
        ) from None


def choice_param(request: web.Request, name: str, choices: Sequence[str], default: str) -> str:
    raw = request.query.get(name) or default
    if raw not in choices:
        raise BadRequest(
            ErrorCode.BAD_PARAMETER,
            f"{name!r} must be one of {', '.join(choices)}, got {raw!r}",
            parameter=name,
        )
    return raw


async def timezone_param(conn: AsyncConnection[Any], request: web.Request) -> str | None:
    """`?tz=`, checked against PostgreSQL's zone database; None when not given."""
    asked = request.query.get("tz")
    if not asked:
        return None
    if not asked.isprintable() or not _utf8(asked) or not await reads.timezone_known(conn, asked):
        raise BadRequest(
            ErrorCode.BAD_PARAMETER, f"'tz' must be a time zone name, got {asked!r}", parameter="tz"
        )
    return asked


def device_param(request: web.Request) -> int:
    return _id_param(request, "device_id")


def site_param(request: web.Request) -> int:
    return _id_param(request, "site_id")


def _id_param(request: web.Request, name: str) -> int:
    raw = request.match_info[name]
    # ASCII digits only: str.isdigit() also takes '²' and other digits int() refuses.
    if not (raw.isascii() and raw.isdigit()) or int(raw) >= 2**63:
        raise BadRequest(
            ErrorCode.BAD_PARAMETER,
            f"{name} must be a non-negative integer, got {raw!r}",
            parameter=name,
        )
    return int(raw)


def hours_param(request: web.Request, limit: timedelta) -> tuple[datetime, datetime]:
    """`from` and `to` of an hourly read (`to` now and `from` a day before it by default):
    'from' before 'to', at most `limit` apart."""
    to = time_param(request, "to", datetime.now(UTC))
    start = time_param(request, "from", to - timedelta(hours=24))
    if start >= to:
        raise BadRequest(ErrorCode.BAD_PARAMETER, "'from' must be before 'to'", parameter="from")
    if to - start > limit:
        raise BadRequest(
            ErrorCode.RANGE_TOO_LARGE, f"at most {limit.days} days per request", parameter="from"
        )
    return start, to


def customer_filter(request: web.Request) -> str | None:
    """`?customer=`: a customer code to filter by, or None when not given. A code no customer can
    have (a control character, bytes that were not UTF-8) is a 400 naming it, not a query."""
    raw = request.query.get("customer") or None
    if raw is not None and not (raw.isprintable() and _utf8(raw)):
        raise BadRequest(
            ErrorCode.BAD_PARAMETER,
            f"'customer' must be a customer code (printable text), got {raw!r}",
            parameter="customer",
        )
    return raw


async def customer_of(conn: AsyncConnection[Any], code: str) -> int:
    if not code.isprintable() or not _utf8(code):  # no customer has such a code
        raise NotFound(f"no customer with code {code!r}", parameter="code")
    found = await reads.customer_id(conn, code)
    if found is None:
        raise NotFound(f"no customer with code {code!r}", parameter="code")
    return found
