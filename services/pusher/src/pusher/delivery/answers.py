"""Reading an answer to a batch: is it ingestd's answer to *this* batch, and what does it say?

Anything may stand between a gateway and ingestd (a proxy, a captive portal, a default vhost, a
broken load balancer), so nothing in an answer is taken on trust:

- a delivery is only a `200` whose JSON body is the protocol's answer for the batch sent: the
  same `batch_type`, and `accepted`, `duplicates` and `rejected` non-negative integers adding up
  to the rows sent. Any other 2xx, or a 200 with another body, is a `ForeignAnswer`: not
  delivered, retried with backoff, the cursor kept;
- only the protocol's own 413 (an `ErrorBody` with the code `payload_too_large` and an integer
  `max_bytes`, or `too_many_rows` / `too_many_rejections` with `max_rows` / `max_rejections`:
  halve the batch, at once) may lead to a row's quarantine — the row-count ones never reach one
  row; a bare 413 is `PayloadTooLarge(protocol=False)`;
- bodies are read up to `MAX_ANSWER_BYTES` and decoded as UTF-8 whatever charset is declared;
  text from an answer that reaches a log line or the state table is cut short and stripped of
  control characters (NUL included);
- `Retry-After` is read by `pusher.retry.parse_retry_after` (ASCII digits or an HTTP-date, capped).

The answer and error bodies are fleetcore's (`fleetcore.answers`), the structs ingestd encodes
them from. `classify` raises the `DeliveryError` that fits or returns ingestd's `IngestAnswer`
(its row errors cut to the first five, cleaned); it raises nothing else, whatever the bytes.
"""

from __future__ import annotations

from typing import Any

import msgspec
from fleetcore.answers import ErrorBody, IngestAnswer, RowError
from fleetcore.reconcile import DigestAnswer

from pusher.errors import (
    DeliveryError,
    ForeignAnswer,
    PayloadTooLarge,
    PermanentDeliveryError,
    RetryLater,
    TransientDeliveryError,
)
from pusher.retry import parse_retry_after

__all__ = ["MAX_ANSWER_BYTES", "classify", "classify_digests", "printable"]

MAX_ANSWER_BYTES = 64 * 1024
"""Bytes of an answer body read at most: ingestd's answers are far smaller (errors capped at 100)."""

_SHOWN = 200


_ANSWER = msgspec.json.Decoder(IngestAnswer)
_DIGESTS = msgspec.json.Decoder(DigestAnswer)
_ERROR = msgspec.json.Decoder(ErrorBody)


def printable(text: str, limit: int = _SHOWN) -> str:
    """`text` cut to `limit` characters, control characters (NUL included) replaced by '?'."""
    cut = text[:limit]
    clean = "".join(c if c.isprintable() or c == " " else "?" for c in cut)
    return clean + ("…" if len(text) > limit else "")


def _first_bytes(raw: bytes) -> str:
    return printable(raw[:_SHOWN].decode("utf-8", "replace")) if raw else "(empty)"


def _decode(decoder: msgspec.json.Decoder[Any], raw: bytes) -> Any:
    """The decoded body, or None when it is not that shape (never an exception: bodies nested
    deeper than msgspec's limit, bad UTF-8 and wrong types all come back as None)."""
    try:
        return decoder.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError, ValueError):
        return None


def _error_detail(status: int, raw: bytes) -> str:
    """'HTTP <status> <error>: <detail>' from a protocol error body, else the first bytes."""
    decoded = _decode(msgspec.json.Decoder(), raw) if raw.startswith(b"{") else None
    if isinstance(decoded, dict):
        code, detail = decoded.get("error"), decoded.get("detail")
        parts = [printable(v, 100) for v in (code, detail) if isinstance(v, str) and v]
        if parts:
            return f"HTTP {status} " + ": ".join(parts)
    return f"HTTP {status}: {_first_bytes(raw)}"


def _delivered(status: int, raw: bytes, batch_type: str, rows: int) -> IngestAnswer:
    """The 200 answer for this batch, or ForeignAnswer saying why it is not."""
    if status != 200:
        raise ForeignAnswer(
            f"HTTP {status} is not ingestd's answer (it answers 200): {_first_bytes(raw)}",
            status=status,
        )
    answer: IngestAnswer | None = _decode(_ANSWER, raw)
    if answer is None:
        raise ForeignAnswer(
            f"HTTP 200 without ingestd's answer in the body: {_first_bytes(raw)}", status=status
        )
    counts = (answer.accepted, answer.duplicates, answer.rejected)
    if answer.batch_type != batch_type:
        why = f"batch_type {printable(answer.batch_type, 40)!r} answers a {batch_type} batch"
    elif min(counts) < 0 or sum(counts) != rows:
        why = f"counts {counts} do not add up to the {rows} rows sent"
    else:
        errors = [RowError(e.index, printable(e.reason)) for e in answer.errors[:5]]
        return msgspec.structs.replace(answer, errors=errors)
    raise ForeignAnswer(f"HTTP 200 not for this batch: {why}", status=status)


def classify(
    status: int, raw: bytes, retry_after: str | None, *, batch_type: str, rows: int
) -> IngestAnswer:
    """What an answer of `status` with body `raw` means for a batch of `rows` rows."""
    if 200 <= status < 300:
        return _delivered(status, raw, batch_type, rows)
    raise _failure(status, raw, retry_after)


def classify_digests(
    status: int, raw: bytes, retry_after: str | None, *, cells: int
) -> DigestAnswer:
    """ingestd's answer to a digest request of `cells` cells (its `compared` is that number, its
    indexes within it), or the DeliveryError that fits."""
    if not 200 <= status < 300:
        raise _failure(status, raw, retry_after)
    answer = _decode(_DIGESTS, raw) if status == 200 else None
    if answer is None:
        raise ForeignAnswer(
            f"HTTP {status} without ingestd's digest answer: {_first_bytes(raw)}", status=status
        )
    if answer.compared != cells or any(not 0 <= d.index < cells for d in answer.differing):
        raise ForeignAnswer(
            f"HTTP 200 not for this digest request ({answer.compared} compared of {cells})",
            status=status,
        )
    return answer  # type: ignore[no-any-return]


def _failure(status: int, raw: bytes, retry_after: str | None) -> DeliveryError:
    detail = _error_detail(status, raw)
    if status == 413:
        too_large: ErrorBody | None = _decode(_ERROR, raw)
        if too_large is not None and too_large.limit() is not None:
            return PayloadTooLarge(detail, max_bytes=too_large.max_bytes, protocol=True)
        return PayloadTooLarge(detail, max_bytes=None, protocol=False)
    if status in (429, 503):
        return RetryLater(detail, status=status, retry_after_s=parse_retry_after(retry_after))
    if status >= 500 or status == 408:
        return TransientDeliveryError(detail, status=status)
    return PermanentDeliveryError(detail, status=status)
