"""`POST /api/fleet/ingest`: the HTTP side of a push, cheapest refusals first.

capacity (503 on arrival when the waiting line is full, `ingestd.admission`) → token (401, from
the token cache or one lookup) → the customer's concurrent requests (429) → batch type and
headers (400/415/413 by Content-Length) → rate limit (429) → body within limits and the memory
budget (413/408/503) → a slot (503 past INGESTD_INFLIGHT_WAIT_S) → decompressing and parsing in
the decoding pool, off the event loop (`ingestd.decoding`: 400/413/503) → `ingestd.ingest.
ingest_batch`, which stores the rows, the dead letters and the audit row in one transaction and
marks the customer seen → the answer. Every byte the request holds is taken from the memory
budget first (`ingestd.memory`) and given back when it ends. A database that cannot be reached
within the pool deadline answers 503 with Retry-After (the error middleware); the pool
reconnects on its own when the database is back.
"""

from __future__ import annotations

import functools
import time
import uuid
from datetime import UTC, datetime

import structlog
from aiohttp import web
from fleetcore import BatchType, ValidationWindow, hash_token, looks_like_token
from fleetcore.answers import IngestAnswer, RowError
from fleetcore.error_codes import ErrorCode
from fleetcore.protocol import (
    BATCH_TYPE_HEADER,
    CURSOR_HEADER,
    MAX_CURSOR_LENGTH,
    MAX_ERRORS_IN_RESPONSE,
    REPAIR_HEADER,
    TOKEN_HEADER,
)

from ingestd.auth import Customer
from ingestd.body import check_content_headers, read_wire_body
from ingestd.decoding import Chunked, DecodeLimits, WireBody, decode
from ingestd.errors import (
    BadRequest,
    IngestError,
    RateLimited,
    Unauthorized,
    UnsupportedMediaType,
)
from ingestd.handlers.http import budget_address, json_answer
from ingestd.ingest import Delivery, ingest_batch, ingest_chunked, record_refusal
from ingestd.keys import (
    ADMISSION,
    AUTH_LIMITER,
    CONTACTS,
    DECODERS,
    LIMITER,
    MEMORY,
    METRICS,
    POOL,
    REQUEST_ID,
    SETTINGS,
    STORAGE,
    TOKEN_LOOKUPS,
)
from ingestd.memory import BodyMemory
from ingestd.ratelimit import RateLimiter
from ingestd.settings import Settings

__all__ = ["authenticate", "batch_type_of", "ingest"]

log = structlog.get_logger("ingestd")

_BATCH_TYPES = {t.value: t for t in BatchType}
_BATCH_TYPE: web.RequestKey[BatchType | None] = web.RequestKey("batch_type")


def _header_text(request: web.Request, name: str) -> str | None:
    """A header's value, which must be printable ASCII (what the protocol sends): anything else
    is a 400 naming the header, never a value that later fails to encode."""
    value = request.headers.get(name)
    if value is not None and not (value.isascii() and value.isprintable()):
        raise BadRequest(ErrorCode.INVALID_HEADER, f"{name} must be printable ASCII")
    return value


def batch_type_of(request: web.Request) -> BatchType | None:
    """The request's X-Batch-Type (case and surrounding blanks ignored), or None when it is
    absent or not one of the three; parsed once per request (the handler, its log and audit
    row, and the metrics middleware all ask)."""
    if _BATCH_TYPE not in request:
        raw = request.headers.get(BATCH_TYPE_HEADER, "")
        request[_BATCH_TYPE] = _BATCH_TYPES.get(raw.strip().lower())
    return request[_BATCH_TYPE]


def _batch_type(request: web.Request) -> BatchType:
    kind = batch_type_of(request)
    if kind is None:
        raise BadRequest(
            ErrorCode.UNKNOWN_BATCH_TYPE,
            f"{BATCH_TYPE_HEADER} must be sites, devices or measurements",
        )
    return kind


def _client_cursor(request: web.Request) -> str | None:
    cursor = _header_text(request, CURSOR_HEADER)
    if cursor is not None and len(cursor) > MAX_CURSOR_LENGTH:
        raise BadRequest(
            ErrorCode.INVALID_CURSOR,
            f"{CURSOR_HEADER} is longer than {MAX_CURSOR_LENGTH} characters",
        )
    return cursor


def _repair(request: web.Request, kind: BatchType) -> bool:
    """X-Push-Repair: absent or 0 (a new batch), 1 (re-sent by reconciliation; measurements)."""
    raw = request.headers.get(REPAIR_HEADER, "0").strip()
    if raw not in ("0", "1"):
        raise BadRequest(ErrorCode.INVALID_REPAIR, f"{REPAIR_HEADER} must be 0 or 1")
    if raw == "1" and kind is not BatchType.MEASUREMENTS:
        raise BadRequest(
            ErrorCode.INVALID_REPAIR, f"{REPAIR_HEADER} marks measurement batches only"
        )
    return raw == "1"


async def authenticate(request: web.Request, settings: Settings) -> Customer:
    """The token's customer; failed attempts are limited per client address (429 past the budget)."""
    token = request.headers.get(TOKEN_HEADER)
    token_hash = hash_token(token) if looks_like_token(token) and token else b""
    address = budget_address(request)
    limiter = request.app[AUTH_LIMITER]
    wait = limiter.wait(address, token_hash)
    if wait > 0:
        raise RateLimited(
            RateLimiter.retry_after(wait), "too many failed authentications from this address"
        )
    try:
        if not token_hash:
            raise Unauthorized()
        customer = await request.app[TOKEN_LOOKUPS].customer(
            token_hash, request.app[POOL], settings.pool_timeout_s
        )
    except Unauthorized:
        limiter.failed(address)
        limiter.forget(token_hash)
        request.app[METRICS].auth_failures.inc()
        raise
    limiter.succeeded(token_hash)
    request.app[CONTACTS].seen(token_hash)
    return customer


async def ingest(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    started = time.perf_counter()
    admission = request.app[ADMISSION]
    admission.check()  # past capacity: refused before any work is spent on it
    customer = await authenticate(request, settings)
    structlog.contextvars.bind_contextvars(customer=customer.code)
    batch_id = request.get(REQUEST_ID) or uuid.uuid4()  # the request's id (the middleware's)
    batch_text = str(batch_id)
    delivery = Delivery(batch_id, started, request.content_length or 0)
    known_kind = batch_type_of(request)
    kind_label = known_kind.value if known_kind else "invalid"
    # one jittered Retry-After for the request's own overload refusals (its memory, its decode
    # deadline: at most one of them answers)
    busy_retry_after = admission.spread(settings.busy_retry_after_s)
    memory = BodyMemory(request.app[MEMORY], busy_retry_after)
    holding_slot = False
    try:
        with admission.customer_turn(customer.id):
            kind = _batch_type(request)
            delivery.client_cursor = _client_cursor(request)
            delivery.repair = _repair(request, kind)
            body_format = check_content_headers(request, settings.max_wire_bytes)
            if body_format.columnar and kind is not BatchType.MEASUREMENTS:
                raise UnsupportedMediaType("the columnar encoding carries measurements only")
            wait = request.app[LIMITER].acquire(customer.id)
            if wait > 0:
                raise RateLimited(RateLimiter.retry_after(wait), "rate limit exceeded")
            wire = WireBody(
                await read_wire_body(
                    request,
                    max_wire_bytes=settings.max_wire_bytes,
                    timeout_s=settings.body_timeout_s,
                    progress=functools.partial(memory.hold, "wire"),
                )
            )
            delivery.wire_bytes = len(wire.data or b"")
            await admission.acquire()  # only received bodies wait for a slot
            holding_slot = True
            limits = DecodeLimits(
                settings.max_body_bytes,
                time.monotonic() + settings.decode_budget_s,
                settings.decode_budget_s,
                busy_retry_after,
            )
            window = ValidationWindow(
                datetime.now(UTC), settings.effective_max_sample_age, settings.max_sample_ahead
            )
            decoded = await decode(
                request.app[DECODERS], wire, body_format, kind, window, limits, memory
            )
            delivery.wire_bytes, delivery.body_bytes = decoded.wire_bytes, decoded.body_bytes
            chunked_or_parsed = decoded.parsed
            del decoded
            if isinstance(chunked_or_parsed, Chunked):
                outcome, parsed = await ingest_chunked(
                    request.app[POOL],
                    settings.pool_timeout_s,
                    request.app[DECODERS],
                    request.app[STORAGE],
                    customer,
                    chunked_or_parsed,
                    delivery,
                )
            else:
                parsed = chunked_or_parsed
                outcome = await ingest_batch(
                    request.app[POOL],
                    settings.pool_timeout_s,
                    request.app[STORAGE],
                    customer,
                    kind,
                    parsed,
                    delivery,
                )
            del chunked_or_parsed
    except IngestError as exc:
        memory.release()
        if exc.status not in (429, 503):  # overload answers are counted in logs, not written
            await record_refusal(
                request.app[POOL],
                settings.pool_timeout_s,
                customer,
                delivery,
                batch_type=kind_label,
                outcome=exc.code,
                status=exc.status,
                error=exc.detail or exc.code,
            )
        log.info(
            "batch",
            batch_id=batch_text,
            batch_type=kind_label,
            status=exc.status,
            error=exc.code,
            detail=exc.detail,
            wire_bytes=delivery.wire_bytes,
            duration_ms=round(delivery.elapsed_ms(), 2),
        )
        raise
    finally:
        memory.release()
        if holding_slot:
            admission.release()

    request.app[METRICS].observe_batch(
        kind.value,
        outcome.accepted,
        outcome.duplicates,
        outcome.rejected,
        delivery.wire_bytes,
        delivery.body_bytes or 0,
        repair=delivery.repair,
    )
    log.info(
        "batch",
        batch_id=batch_text,
        batch_type=kind.value,
        status=200,
        accepted=outcome.accepted,
        duplicates=outcome.duplicates,
        rejected=outcome.rejected,
        wire_bytes=delivery.wire_bytes,
        body_bytes=delivery.body_bytes,
        repair=delivery.repair,
        duration_ms=round(outcome.duration_ms, 2),
    )
    return json_answer(
        IngestAnswer(
            batch_type=kind.value,
            batch_id=batch_text,
            accepted=outcome.accepted,
            duplicates=outcome.duplicates,
            rejected=outcome.rejected,
            errors=[
                RowError(r.index, r.reason) for r in parsed.rejections[:MAX_ERRORS_IN_RESPONSE]
            ],
        )
    )
