"""A JSON batch body decoded into rows and validated row by row (`parse_batch`).

A batch body is `{"items": [...]}`. A body that is not JSON, or has no `items` list, is a
`BatchFormatError` (HTTP 400: the client must fix it). Inside a well-formed body every row is
validated on its own against the row schemas (`fleetcore.schemas`): a bad row becomes a
`Rejection` (index, reason, the row's JSON text) and the rest of the batch goes on. Nothing is
dropped silently.

Decoding is done by msgspec, which parses JSON straight into typed structs and checks types and
constraints in C. The common case, a batch where every row is valid, is decoded in one call;
only when that fails is the body re-read as a list of raw rows and each row decoded alone, so
the cost of per-row error reporting is paid only by batches that have errors.

What a body may cost is bounded before it is spent (`fleetcore.limits`): a batch has at most
`MAX_BATCH_ROWS` items — counted from the bytes (`fleetcore.jsonscan`) before the rows of a body
that could hold more are built — and at most `MAX_REJECTED_ROWS` refused rows; past either, the
whole body is a `BatchFormatError` (`too_many_rows`, `too_many_rejections`; HTTP 413).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import msgspec

from fleetcore.error_codes import ErrorCode
from fleetcore.limits import MAX_BATCH_ROWS, MAX_REJECTED_ROWS
from fleetcore.schemas import (
    BatchFormatError,
    BatchType,
    DeviceRow,
    MeasurementRow,
    ParsedBatch,
    Rejection,
    SiteRow,
    ValidationWindow,
    too_many_rejections,
    too_many_rows,
    window_reason,
)

__all__ = ["check_item_bound", "decode_measurement_rows", "parse_batch"]


class _Envelope(msgspec.Struct):
    items: list[msgspec.Raw]


class _SiteBatch(msgspec.Struct):
    items: list[SiteRow]


class _DeviceBatch(msgspec.Struct):
    items: list[DeviceRow]


class _MeasurementBatch(msgspec.Struct):
    items: list[MeasurementRow]


_ROW_TYPES: dict[BatchType, type[Any]] = {
    BatchType.SITES: SiteRow,
    BatchType.DEVICES: DeviceRow,
    BatchType.MEASUREMENTS: MeasurementRow,
}
_BATCH_DECODERS: dict[BatchType, msgspec.json.Decoder[Any]] = {
    BatchType.SITES: msgspec.json.Decoder(_SiteBatch),
    BatchType.DEVICES: msgspec.json.Decoder(_DeviceBatch),
    BatchType.MEASUREMENTS: msgspec.json.Decoder(_MeasurementBatch),
}
_ROW_DECODERS: dict[BatchType, msgspec.json.Decoder[Any]] = {
    kind: msgspec.json.Decoder(row_type) for kind, row_type in _ROW_TYPES.items()
}
_ENVELOPE_DECODER = msgspec.json.Decoder(_Envelope)
_ID_PROBE = msgspec.json.Decoder(dict[str, Any])


def _payload_text(raw: bytes) -> str:
    return raw.decode("utf-8", "backslashreplace").replace("\x00", "\\x00")


_TIME_FIELDS: dict[BatchType, tuple[str, ...]] = {
    BatchType.SITES: ("updated_at",),
    BatchType.DEVICES: ("updated_at",),
    BatchType.MEASUREMENTS: ("time", "received_at"),
}


def _outside_utc(row: Any, kind: BatchType) -> str | None:
    """A time RFC 3339 allows but UTC cannot hold (0001-01-01T00:30:00+01:00 is in year 0 UTC,
    9999-12-31T23:30:00-01:00 in year 10000): it could be neither compared nor stored."""
    for name in _TIME_FIELDS[kind]:
        value: datetime = getattr(row, name)
        try:
            value.astimezone(UTC)
        except OverflowError:
            return f"{value.isoformat()} is outside years 1-9999 in UTC - at `$.{name}`"
    return None


def _row_reason(row: Any, kind: BatchType, window: ValidationWindow) -> str | None:
    reason = _outside_utc(row, kind)
    if reason is None and kind is BatchType.MEASUREMENTS:
        return window_reason(row, window)
    return reason


def _check_rejections(rejections: list[Rejection]) -> None:
    if len(rejections) > MAX_REJECTED_ROWS:
        raise too_many_rejections()


def _check_items(body: bytes | bytearray) -> None:
    """Refuse a body that may hold more items than a batch may carry, counted from its bytes."""
    from fleetcore.jsonscan import max_items  # numpy: ingestd's side only, never the pusher's

    items = max_items(body, stop_above=MAX_BATCH_ROWS)
    if items > MAX_BATCH_ROWS:
        raise too_many_rows(items)


def check_item_bound(body: bytes | bytearray) -> bool:
    """Before a typed decode (which builds one object per JSON object of the body): refuse a
    body that may hold more items than a batch may carry. True when the items were counted."""
    counted = body.count(b"{") > MAX_BATCH_ROWS + 1
    if counted:
        _check_items(body)
    return counted


def _decode_rows(
    body: bytes | bytearray, kind: BatchType
) -> tuple[list[Any], list[Rejection], bool]:
    """Return (rows, rejections, indexed): `indexed` says rows are (index, row) pairs.

    The typed decode builds one row object per object of the body before it can fail, so a body
    with more objects than a batch may have rows is counted first; the per-row path builds one
    object per item, so a body with more commas than that is counted before it runs."""
    counted = check_item_bound(body)
    typed = _typed_rows(body, kind)
    if typed is not None:
        return typed, [], False
    # The per-row path tells which rows are bad and why.
    if not counted and body.count(b",") >= MAX_BATCH_ROWS:
        _check_items(body)
    try:
        raws = _ENVELOPE_DECODER.decode(body).items
    except msgspec.ValidationError as exc:
        raise BatchFormatError(
            ErrorCode.INVALID_BATCH, f'body must be an object with an "items" list: {exc}'
        ) from None
    except msgspec.DecodeError as exc:
        raise BatchFormatError(ErrorCode.INVALID_JSON, f"body is not valid JSON: {exc}") from None
    except UnicodeDecodeError:
        raise BatchFormatError(ErrorCode.INVALID_JSON, "body is not valid UTF-8") from None
    except RecursionError:
        raise BatchFormatError(ErrorCode.INVALID_JSON, "body is nested too deeply") from None
    if len(raws) > MAX_BATCH_ROWS:
        raise too_many_rows(len(raws))
    decoder = _ROW_DECODERS[kind]
    rows: list[tuple[int, Any]] = []
    rejections: list[Rejection] = []
    for index, raw in enumerate(raws):
        try:
            rows.append((index, decoder.decode(raw)))
            continue
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            reason = str(exc)
        except UnicodeDecodeError:
            reason = "row is not valid UTF-8"
        except RecursionError:
            reason = "row is nested too deeply"
        rejections.append(Rejection(index, reason, _payload_text(bytes(raw))))
        _check_rejections(rejections)
    return rows, rejections, True


def _typed_rows(body: bytes | bytearray, kind: BatchType) -> list[Any] | None:
    """Every item as a row of `kind` (msgspec's one typed decode), or None when any item is not
    one or the body is not a batch at all (`_decode_rows`' per-row path then says what)."""
    try:
        typed: list[Any] = _BATCH_DECODERS[kind].decode(body).items
    except (msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        return None
    if len(typed) > MAX_BATCH_ROWS:
        raise too_many_rows(len(typed))
    return typed


def decode_measurement_rows(body: bytes | bytearray) -> list[MeasurementRow] | None:
    """Every item of a measurement body as a `MeasurementRow`, before the window is checked;
    None when any item is not one, or the body is no batch (`parse_batch` then says which and
    why, or refuses it). Past `MAX_BATCH_ROWS` items it raises as `parse_batch` does."""
    check_item_bound(body)
    return _typed_rows(body, BatchType.MEASUREMENTS)


def _probe_id(raw: str) -> int | None:
    """Best-effort id of a rejected full-set row (so it is not marked deleted)."""
    try:
        obj = _ID_PROBE.decode(raw.encode("utf-8", "surrogatepass"))
    except (
        msgspec.DecodeError,
        msgspec.ValidationError,
        UnicodeDecodeError,
        RecursionError,
        ValueError,
    ):
        return None
    value = obj.get("id")
    return value if type(value) is int and 0 <= value < 2**63 else None


def _extreme_received(rows: list[MeasurementRow]) -> list[MeasurementRow]:
    """The rows with the earliest and the latest `received_at` (the only ones whose received_at
    can fall outside UTC's years)."""
    if not rows:
        return []
    return [min(rows, key=_received_at), max(rows, key=_received_at)]


def _received_at(row: MeasurementRow) -> datetime:
    return row.received_at


def parse_batch(
    body: bytes | bytearray, kind: BatchType, window: ValidationWindow
) -> ParsedBatch[Any]:
    """Decode and validate a batch body; raise `BatchFormatError` only for whole-body problems."""
    decoded, rejections, is_indexed = _decode_rows(body, kind)
    if kind is BatchType.MEASUREMENTS and not is_indexed:
        # Fast path: check the window once on min/max; only a batch with an out-of-window
        # sample pays for a per-row pass. (Comparing aware times never overflows; a time UTC
        # cannot hold is below or above any window.)
        times = [row.time for row in decoded]
        if not times:
            return ParsedBatch(rows=decoded)
        first, last = min(times), max(times)
        if (
            first >= window.earliest
            and last <= window.latest
            and all(_outside_utc(row, kind) is None for row in _extreme_received(decoded))
        ):
            return ParsedBatch(rows=decoded, first_time=first, last_time=last)
    indexed: Sequence[tuple[int, Any]] = decoded if is_indexed else list(enumerate(decoded))

    good: list[tuple[int, Any]] = []
    for index, row in indexed:
        reason = _row_reason(row, kind, window)
        if reason is None:
            good.append((index, row))
        else:
            rejections.append(Rejection(index, reason, msgspec.json.encode(row).decode()))
            _check_rejections(rejections)
    rejections.sort(key=lambda r: r.index)

    if kind is BatchType.MEASUREMENTS:
        rows = [row for _, row in good]
        times = [row.time for row in rows]
        return ParsedBatch(
            rows=rows,
            rejections=rejections,
            first_time=min(times) if times else None,
            last_time=max(times) if times else None,
        )

    # Full-set batches: one row per id, the last occurrence wins.
    by_id: dict[int, Any] = {}
    for _, row in good:
        by_id[row.id] = row
    ids_seen = set(by_id)
    for rejection in rejections:
        probed = _probe_id(rejection.payload)
        if probed is not None:
            ids_seen.add(probed)
    return ParsedBatch(
        rows=list(by_id.values()),
        rejections=rejections,
        ids_seen=ids_seen,
        duplicates=len(good) - len(by_id),
    )
