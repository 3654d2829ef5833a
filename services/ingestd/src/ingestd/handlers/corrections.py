"""The corrections feed: which energy changed after it was final, for a billing export to re-issue.

    GET /api/fleet/customers/{code}/energy/changes?since=RFC3339
        &device_id= &site_id=   only this device's, or the devices of this site
        &limit=1..10000 (default 1000)

Oldest first; each row is a span of one device's energy that a recompute revised at
`revised_at`, with the local days it touches in its site's zone. A page ends with every row of
its last `revised_at`; ask again with `since=next_since` while `more` is true. What counts as a
revision: `ingestd.storage.revisions`, docs/ENERGY.md ("Corrections").
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from fleetcore.error_codes import ErrorCode

from ingestd.errors import BadRequest
from ingestd.handlers.energy import answer
from ingestd.handlers.http import snapshot
from ingestd.handlers.params import customer_of, iso, time_param
from ingestd.storage import reads
from ingestd.storage import revisions as revisions_store

__all__ = ["CHANGES_MAX_LIMIT", "CHANGES_PARAMS", "energy_changes"]

CHANGES_MAX_LIMIT = 10_000
CHANGES_PARAMS = ("since", "device_id", "site_id", "limit")


def _id_param(request: web.Request, name: str) -> int | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return None
    if not (raw.isascii() and raw.isdigit()) or int(raw) >= 2**63:
        raise BadRequest(
            ErrorCode.BAD_PARAMETER,
            f"{name} must be a non-negative integer, got {raw!r}",
            parameter=name,
        )
    return int(raw)


def _limit(request: web.Request) -> int:
    raw = request.query.get("limit", "1000")
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= CHANGES_MAX_LIMIT:
        raise BadRequest(
            ErrorCode.BAD_PARAMETER,
            f"limit must be an integer from 1 to {CHANGES_MAX_LIMIT}, got {raw!r}",
            parameter="limit",
        )
    return int(raw)


def _check_params(request: web.Request) -> None:
    extra = sorted(set(request.query) - set(CHANGES_PARAMS))
    if extra:
        raise BadRequest(
            ErrorCode.BAD_PARAMETER,
            f"unknown parameter {extra[0]!r}; the changes feed takes {', '.join(CHANGES_PARAMS)}",
            parameter=extra[0],
        )
    if not request.query.get("since"):
        raise BadRequest(
            ErrorCode.BAD_PARAMETER,
            "'since' is required: an RFC 3339 time with offset (the last answer's next_since)",
            parameter="since",
        )


async def energy_changes(request: web.Request) -> web.StreamResponse:
    _check_params(request)
    since = time_param(request, "since", datetime.now(UTC))  # present: checked above
    device_id = _id_param(request, "device_id")
    site_id = _id_param(request, "site_id")
    limit = _limit(request)
    code = request.match_info["code"]
    async with snapshot(request) as conn:
        cid = await customer_of(conn, code)
        zones = [
            zone
            for zone in await revisions_store.site_zones(conn, cid)
            if await reads.timezone_known(conn, zone)
        ]
        rows, more = await revisions_store.changes_since(
            conn, cid, since, device_id=device_id, site_id=site_id, limit=limit, zones=zones
        )
    out: list[dict[str, Any]] = [
        {
            "device_id": row["device_id"],
            "site_id": row["site_id"],
            "from": iso(row["from"]),
            "to": iso(row["to"]),
            "revised_at": iso(row["revised_at"]),
            "zone": row["zone"],
            "days": [day.isoformat() for day in row["days"]],
        }
        for row in rows
    ]
    next_since = out[-1]["revised_at"] if out else iso(since)
    body = {"customer": code, "since": iso(since), "next_since": next_since, "more": more}
    if "text/csv" in request.headers.get("Accept", ""):
        for row in out:
            row["days"] = " ".join(row["days"])
    return answer(request, out, revisions_store.CHANGE_FIELDS, body)
