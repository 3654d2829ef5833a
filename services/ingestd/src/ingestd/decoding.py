"""Decompressing and parsing a received body, off the event loop, within a deadline and the
memory budget.

A measurement batch comes out as columns whatever its encoding (`ParsedColumns`; a JSON body's
rows are turned into columns here, in the decoding thread); sites and devices as rows. A JSON
measurement body of `CHUNKED_MIN_BYTES` and more decompressed comes out inflated and cut at item
boundaries into a few chunks (a pusher's 5,000-row batch: three, the first the smaller; `Chunked`,
`chunk_schedule`), for `ingestd.ingest.ingest_chunked` to decode them one after the other in the
pool while PostgreSQL stores the ones before (issue 26's large batches: PostgreSQL's work
overlaps ingestd's). A large JSON measurement body, whole or a chunk, is turned into columns by
the C scanner first (`ingestd.rowscan`: a pusher's form, ~0.6 µs/row against msgspec's ~1.8, with
the GIL released), by fleetcore's msgspec way when the scanner does not take it.

`decode_batch` runs in the decoding pool (a thread pool with one thread per slot,
INGESTD_MAX_INFLIGHT, made in `lifecycle.py`): inflating and parsing a large body takes CPU for
milliseconds to a second, and on the event loop that would hold every other request, `/healthz`
included. A small clean measurement batch is the exception (`decode`, `_decode_small`): at most
`INLINE_WIRE_BYTES` on the wire, `INLINE_BODY_BYTES` decompressed and, columnar, `INLINE_ROWS`
rows, it is decoded on the event loop — the hand-off to a pool thread and back (a thread woken, a
future, the loop woken through its self-pipe, the GIL passed twice) cost ~160 µs of CPU per
request, about half of decoding a 27-row gateway batch. A JSON body with a refused row is left
to the pool (finding which rows and why is the costly part), so the worst small body holds the
loop for about a millisecond (`bench/hostile_decode.py --inline`). Every step of the pool's
decoding asks first:

- the deadline (INGESTD_DECODE_BUDGET_S from the moment the batch got its slot): past it, 503
  with Retry-After — no body within the limits needs more than a fraction of it (decoding is
  linear in the wire bytes, `ingestd.body`), so only an overloaded process reaches it;
- the memory budget (`ingestd.memory`): the decompressed bytes before they are held, then an
  upper bound of the rows before they are parsed.

The row limits are fleetcore's (`fleetcore.limits`): past `MAX_BATCH_ROWS` rows or
`MAX_REJECTED_ROWS` refused rows the batch is refused whole with 413 `too_many_rows` /
`too_many_rejections` (a pusher halves the batch).
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

from fleetcore import (
    BatchFormatError,
    BatchType,
    MeasurementRow,
    ParsedBatch,
    ParsedColumns,
    ValidationWindow,
    parse_batch,
    parse_columnar_batch,
    parse_measurement_columns,
)
from fleetcore.columnar import declared_rows
from fleetcore.error_codes import ErrorCode
from fleetcore.json_columns import chunk_body, clean_measurement_columns, edge_rows, item_spans
from fleetcore.json_text_time import TEXT_TIME_MIN_BYTES
from fleetcore.protocol import MAX_BATCH_ROWS, MAX_REJECTED_ROWS

from ingestd.body import BodyFormat, decode_body
from ingestd.errors import BadRequest, BatchTooLarge, IngestError, ServiceUnavailable
from ingestd.memory import BodyMemory, parsed_bytes
from ingestd.rowscan import items_span, scan_clean

__all__ = [
    "CHUNKED_MIN_BYTES",
    "CHUNK_BYTES",
    "CHUNK_GROWTH",
    "FIRST_CHUNK_SHARE",
    "INLINE_BODY_BYTES",
    "INLINE_ROWS",
    "INLINE_WIRE_BYTES",
    "Chunked",
    "Decoded",
    "WireBody",
    "chunk_schedule",
    "decode",
    "decode_batch",
]

INLINE_WIRE_BYTES = 16 * 1024
"""A measurement body at most this large as received may be decoded on the event loop (a
gateway's minute of 27 meters is ~4 KiB of gzip JSON, ~1.5 KiB columnar)..."""
INLINE_BODY_BYTES = 32 * 1024
"""...when it decompresses to at most this many bytes (~60 rows of JSON)..."""
INLINE_ROWS = 64
"""...and, columnar, declares at most this many rows (its refusals, if any, are found inline)."""

CHUNKED_MIN_BYTES = 1024 * 1024
"""A JSON measurement body of at least this many bytes decompressed (~2,300 rows) is stored as
it is decoded (`Chunked`), when it can be cut, in chunks (`chunk_schedule`)..."""
FIRST_CHUNK_SHARE = 0.2
"""...the first this share of the body, each next one twice the one before (a pusher's
5,000-row batch: 1,000 rows, then 2,000 and 2,000)...

Why the first small: the request's critical path is the decode up to the first chunk, then
PostgreSQL's COPY of the whole batch (it stores 5,000 rows in about the time the pool decodes
them, ~3.5 µs/row here: a chunk decoded while the one before is stored), then the commit. A
small first chunk starts PostgreSQL sooner; the later ones, twice as large, are decoded before
PostgreSQL is done with the one before. In a running ingestd (bench/README.md, issue 26's
seventh pass) two fifths then the rest had PostgreSQL begin ~12 ms into the request and finish
~10 ms after the last chunk was handed over; these three ~9 ms and ~8 ms. Few chunks still: each
costs fixed work (~0.15-0.25 ms of numpy calls and objects), though in one process these three
cost +0.01 µs/row over two fifths (bench/decode.py) — the CPU issue 22's guard counts."""
CHUNK_GROWTH = 2
CHUNK_BYTES = 1024 * 1024
"""...and no chunk larger than this (~2,300 rows), but for a last one of under half more: a
body of 10,000 rows and more goes in chunks of 1 MiB after its first, each one's fixed work a
small share of it."""


def chunk_schedule(body_bytes: int) -> tuple[int, int, int]:
    """`item_spans`' first, most and growth for a body of `body_bytes` (see `FIRST_CHUNK_SHARE`)."""
    first = min(int(body_bytes * FIRST_CHUNK_SHARE), CHUNK_BYTES)
    return first, CHUNK_BYTES, CHUNK_GROWTH


Parsed = ParsedBatch[Any] | ParsedColumns


@dataclass(frozen=True, slots=True)
class Chunked:
    """A large JSON measurement body cut at item boundaries (`fleetcore.json_columns.item_spans`)
    for storing while it is decoded: `parse(i)` is chunk i's columns when every row of it is
    valid and inside the window (None otherwise: the batch then goes whole, `whole()`). The body
    is held until the batch is stored."""

    body: bytes | bytearray
    spans: list[tuple[int, int]]
    window: ValidationWindow
    edges: tuple[MeasurementRow, MeasurementRow]
    """The batch's first and last rows (`fleetcore.json_columns.edge_rows`)."""

    def parse(self, i: int) -> ParsedColumns | None:
        """Chunk i's columns, or None (CPU-bound: run in the decoding pool): by the C scanner
        (`ingestd.rowscan`), else fleetcore's way."""
        scanned = scan_clean(self.body, self.spans[i], self.window)
        if scanned is not None:
            return scanned
        try:
            return clean_measurement_columns(chunk_body(self.body, self.spans[i]), self.window)
        except BatchFormatError:
            return None

    def whole(self) -> ParsedColumns:
        """The body parsed whole, as `decode_batch` parses one (CPU-bound: the decoding pool)."""
        try:
            return parse_measurement_columns(self.body, self.window)
        except BatchFormatError as exc:
            raise _format_error(exc) from None


@dataclass(slots=True)
class WireBody:
    """The body as received, handed to the decoding thread, which lets go of it (`data` = None)
    as soon as it is decompressed: the caller keeps no reference to it."""

    data: bytearray | None


@dataclass(frozen=True, slots=True)
class Decoded:
    parsed: Parsed | Chunked
    wire_bytes: int
    body_bytes: int


@dataclass(frozen=True, slots=True)
class DecodeLimits:
    max_body_bytes: int
    deadline: float  # time.monotonic()
    budget_s: float
    retry_after_s: int


def _format_error(exc: BatchFormatError) -> BadRequest | BatchTooLarge:
    if exc.code is ErrorCode.TOO_MANY_ROWS:
        return BatchTooLarge(exc.code, exc.detail, max_rows=MAX_BATCH_ROWS)
    if exc.code is ErrorCode.TOO_MANY_REJECTIONS:
        return BatchTooLarge(exc.code, exc.detail, max_rejections=MAX_REJECTED_ROWS)
    return BadRequest(exc.code, exc.detail)


def decode_batch(
    wire: WireBody,
    body_format: BodyFormat,
    kind: BatchType,
    window: ValidationWindow,
    limits: DecodeLimits,
    memory: BodyMemory,
) -> Decoded:
    """The parsed batch of a received body (CPU-bound: run in the decoding pool)."""

    def progress(size: int) -> None:
        if time.monotonic() > limits.deadline:
            raise ServiceUnavailable(
                limits.retry_after_s,
                f"decoding the body took longer than {limits.budget_s:g} s, retry later",
            )
        memory.hold("body", size + size // 8)  # a growing bytearray over-allocates by 1/8

    data = wire.data
    wire.data = None
    assert data is not None
    wire_bytes = len(data)
    body = decode_body(
        data, encoding=body_format.encoding, max_body_bytes=limits.max_body_bytes, progress=progress
    )
    if body.data is data:
        memory.move("wire", "body")
    del data
    memory.drop("wire")
    body_bytes = len(body.data)
    rows = declared_rows(body.data) if body_format.columnar else None
    memory.hold("parsed", parsed_bytes(body_bytes, columnar=body_format.columnar, rows=rows))
    if kind is BatchType.MEASUREMENTS and not body_format.columnar:
        spans = (
            item_spans(body.data, *chunk_schedule(body_bytes))
            if body_bytes >= CHUNKED_MIN_BYTES
            else None
        )
        edges = edge_rows(body.data, spans, window) if spans is not None else None
        if spans is not None and edges is not None:
            return Decoded(Chunked(body.data, spans, window, edges), wire_bytes, body_bytes)
    try:
        parsed: Parsed
        if body_format.columnar:
            parsed = parse_columnar_batch(body.data, window)
        elif kind is BatchType.MEASUREMENTS:
            parsed = _measurement_columns(body.data, window)
        else:
            parsed = parse_batch(body.data, kind, window)
    except BatchFormatError as exc:
        raise _format_error(exc) from None
    del body
    memory.drop("body")
    return Decoded(parsed, wire_bytes, body_bytes)


def _measurement_columns(body: bytes | bytearray, window: ValidationWindow) -> ParsedColumns:
    """A JSON measurement body as columns: a large clean one by the C scanner
    (`ingestd.rowscan`), any other by fleetcore (`parse_measurement_columns`, which says which
    rows are refused and why). A small one (a gateway's minute) keeps fleetcore's way, which
    costs fewer numpy calls per request."""
    span = items_span(body) if len(body) >= TEXT_TIME_MIN_BYTES else None
    if span is not None:
        scanned = scan_clean(body, span, window)
        if scanned is not None:
            return scanned
    return parse_measurement_columns(body, window)


def _decode_small(
    wire: WireBody,
    body_format: BodyFormat,
    kind: BatchType,
    window: ValidationWindow,
    limits: DecodeLimits,
) -> Decoded | None:
    """A small measurement body decoded on the event loop, or None: not small, not clean (a
    JSON body with a refused row or a whole-body problem) or already past the decoding deadline,
    for the pool to decode and answer.
    The event loop decodes one body at a time, so what this holds is bounded by the limits
    above without the memory budget."""
    data = wire.data
    if kind is not BatchType.MEASUREMENTS or data is None or len(data) > INLINE_WIRE_BYTES:
        return None
    if time.monotonic() > limits.deadline:
        return None  # the pool answers 503 at its first step
    try:
        body = decode_body(
            data,
            encoding=body_format.encoding,
            max_body_bytes=min(INLINE_BODY_BYTES, limits.max_body_bytes),
            progress=None,
        )
        parsed: Parsed | None
        if body_format.columnar:
            rows = declared_rows(body.data)
            if rows is None or rows > INLINE_ROWS:
                return None
            parsed = parse_columnar_batch(body.data, window)
        else:
            parsed = clean_measurement_columns(body.data, window)
    except (IngestError, BatchFormatError):
        return None
    if parsed is None:
        return None
    wire.data = None
    return Decoded(parsed, len(data), len(body.data))


async def decode(
    pool: Executor,
    wire: WireBody,
    body_format: BodyFormat,
    kind: BatchType,
    window: ValidationWindow,
    limits: DecodeLimits,
    memory: BodyMemory,
) -> Decoded:
    """The parsed batch of a received body: on the event loop when it is a small clean
    measurement batch (see the module docstring), else by `decode_batch` in `pool`."""
    decoded = _decode_small(wire, body_format, kind, window, limits)
    if decoded is not None:
        return decoded
    return await asyncio.get_running_loop().run_in_executor(
        pool, decode_batch, wire, body_format, kind, window, limits, memory
    )
