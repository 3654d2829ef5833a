"""`POST /api/fleet/reconcile`: compare a pusher's digests with what the centre holds.

The same gate as a batch, cheapest refusal first (`handlers.ingest`): capacity → token → content
headers → rate limit → body within its limits (`MAX_DIGEST_BODY_BYTES` decompressed, at most
`MAX_CELLS` cells, one request's cells spanning at most `MAX_SPAN`) → a slot → one digest query
(`ingestd.storage.digests`) under INGESTD_DIGEST_TIMEOUT_S. The answer lists the cells that
differ with the centre's digest of each, and the window of sample times the centre accepts.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

import msgspec
import psycopg
import structlog
from aiohttp import web
from fleetcore.error_codes import ErrorCode
from fleetcore.protocol import MAX_DIGEST_BODY_BYTES
from fleetcore.reconcile import (
    MAX_SPAN,
    CellDigest,
    DifferingCell,
    DigestAnswer,
    DigestRequest,
    format_hash,
    parse_hash,
)

from ingestd.body import check_content_headers, decode_body, read_wire_body
from ingestd.errors import BadRequest, RateLimited, ServiceUnavailable, UnsupportedMediaType
from ingestd.handlers.http import connection, json_answer
from ingestd.handlers.ingest import authenticate
from ingestd.keys import ADMISSION, LIMITER, METRICS, SETTINGS
from ingestd.ratelimit import RateLimiter
from ingestd.storage.digests import central_digests, hash_matches, record_digest_request

__all__ = ["reconcile"]

log = structlog.get_logger("ingestd")

_DECODER = msgspec.json.Decoder(DigestRequest)
_HOUR_US = 3_600_000_000


def parse_digest_request(data: bytes | bytearray) -> DigestRequest:
    """The request, checked beyond its types: cells on whole hours, devices listed, the span."""
    try:
        request = _DECODER.decode(data)
    except (msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise BadRequest(ErrorCode.INVALID_DIGEST, f"not a digest request: {exc}") from None
    devices = set(request.devices)
    for index, cell in enumerate(request.cells):
        start = cell.start.astimezone(UTC)
        if start.minute or start.second or start.microsecond:
            raise BadRequest(
                ErrorCode.INVALID_DIGEST, f"cells[{index}].start is not on a whole hour"
            )
        if cell.device is not None and cell.device not in devices:
            raise BadRequest(ErrorCode.INVALID_DIGEST, f"cells[{index}].device is not in devices")
    if request.cells:
        first = min(c.start for c in request.cells)
        last = max(c.end for c in request.cells)
        if last - first > MAX_SPAN:
            raise BadRequest(
                ErrorCode.INVALID_DIGEST, f"the cells span more than {MAX_SPAN.days} days"
            )
    return request


def _differing(request: DigestRequest, central: list[CellDigest]) -> list[DifferingCell]:
    return [
        DifferingCell(index, there.count, format_hash(there.hash))
        for index, (cell, there) in enumerate(zip(request.cells, central, strict=True))
        if there.count != cell.count or there.hash != parse_hash(cell.hash)
    ]


async def reconcile(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    started = time.perf_counter()
    admission = request.app[ADMISSION]
    admission.check()
    customer = await authenticate(request, settings)
    structlog.contextvars.bind_contextvars(customer=customer.code)
    body_format = check_content_headers(request, settings.max_wire_bytes)
    if body_format.columnar:
        raise UnsupportedMediaType("a digest request is JSON")
    wait = request.app[LIMITER].acquire(customer.id)
    if wait > 0:
        raise RateLimited(RateLimiter.retry_after(wait), "rate limit exceeded")
    wire = await read_wire_body(
        request, max_wire_bytes=settings.max_wire_bytes, timeout_s=settings.body_timeout_s
    )
    await admission.acquire()
    try:
        body = decode_body(
            wire,
            encoding=body_format.encoding,
            max_body_bytes=min(settings.max_body_bytes, MAX_DIGEST_BODY_BYTES),
        )
        digest_request = parse_digest_request(body.data)
        async with connection(request) as conn:
            if not await hash_matches(conn):
                log.error("digest_hash_mismatch", hint="this PostgreSQL computes another row hash")
                raise BadRequest(
                    ErrorCode.DIGEST_UNSUPPORTED, "the central database computes another row hash"
                )
            try:
                central = await central_digests(
                    conn, customer.id, digest_request, settings.digest_timeout_s
                )
            except psycopg.errors.QueryCanceled:
                raise ServiceUnavailable(
                    settings.retry_after_s,
                    f"the digests took over {settings.digest_timeout_s:g} s: send fewer cells",
                ) from None
            differing = _differing(digest_request, central)
            await record_digest_request(conn, customer.id, len(central), len(differing))
    finally:
        admission.release()
    now = datetime.now(UTC)
    answer = DigestAnswer(
        compared=len(central),
        differing=differing,
        earliest=now - settings.effective_max_sample_age,
        latest=now + settings.max_sample_ahead,
    )
    metrics = request.app[METRICS]
    metrics.digest_cells.labels("equal").inc(len(central) - len(differing))
    metrics.digest_cells.labels("differing").inc(len(differing))
    log.info(
        "digests",
        cells=len(central),
        differing=len(differing),
        wire_bytes=body.wire_bytes,
        duration_ms=round((time.perf_counter() - started) * 1000, 2),
    )
    return json_answer(msgspec.to_builtins(answer))
