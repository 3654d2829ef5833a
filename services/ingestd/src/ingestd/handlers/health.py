"""`POST /api/fleet/health`: a gateway's health report (docs/PROTOCOL.md, "Health reports").

Same door as a batch — capacity, token (the report belongs to the token: one token, one gateway),
rate limit — then a body of at most `MAX_REPORT_BYTES` as sent and decompressed, decoded
(`fleetcore.health`), checked for plausibility and stored as the gateway's latest report in one
statement. A report holds no slot among the batches in flight: it is a few hundred bytes, decoded
in microseconds, and must never wait behind (or hold up) measurements.

Answers: 200 `{"stored": true, "implausible": [...]}` (the fields stored as flagged), 400
`invalid_report` naming the field, 413 over the size, 415 not JSON, and the door's 401/429/503.
"""

from __future__ import annotations

from datetime import UTC, datetime

import structlog
from aiohttp import web
from fleetcore import (
    MAX_REPORT_BYTES,
    ReportFormatError,
    decode_report,
    hash_token,
    implausible_fields,
)
from fleetcore.protocol import TOKEN_HEADER

from ingestd.body import check_content_headers, decode_body, read_wire_body
from ingestd.errors import BadRequest, RateLimited, UnsupportedMediaType
from ingestd.handlers.http import connection, json_answer
from ingestd.handlers.ingest import authenticate
from ingestd.keys import ADMISSION, LIMITER, METRICS, SETTINGS
from ingestd.ratelimit import RateLimiter
from ingestd.storage.gateways import store_report

__all__ = ["health_report"]

log = structlog.get_logger("ingestd")


async def health_report(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    request.app[ADMISSION].check()
    customer = await authenticate(request, settings)
    structlog.contextvars.bind_contextvars(customer=customer.code)
    token_hash = hash_token(request.headers[TOKEN_HEADER])
    body_format = check_content_headers(request, MAX_REPORT_BYTES)
    if body_format.columnar:
        raise UnsupportedMediaType("a health report is JSON")
    wait = request.app[LIMITER].acquire(customer.id)
    if wait > 0:
        raise RateLimited(RateLimiter.retry_after(wait), "rate limit exceeded")
    wire = await read_wire_body(
        request, max_wire_bytes=MAX_REPORT_BYTES, timeout_s=settings.body_timeout_s
    )
    # At most 2 KiB in and out, one frame or member: microseconds, fine on the event loop.
    body = decode_body(
        wire, encoding=body_format.encoding, max_body_bytes=MAX_REPORT_BYTES, max_members=1
    )
    try:
        report = decode_report(body.data)
    except ReportFormatError as exc:
        request.app[METRICS].health_reports.labels("invalid").inc()
        log.info("health_report", status=400, error=exc.code, detail=exc.detail[:200])
        raise BadRequest(exc.code, exc.detail) from None
    flagged = implausible_fields(report, datetime.now(UTC))
    async with connection(request) as conn:
        await store_report(conn, token_hash, customer.id, report, flagged)
    request.app[METRICS].health_reports.labels("flagged" if flagged else "stored").inc()
    log.info(
        "health_report",
        status=200,
        version=report.version,
        wire_bytes=body.wire_bytes,
        implausible=flagged or None,
    )
    return json_answer({"stored": True, "implausible": flagged})
