"""Reconciliation (anti-entropy) between a pusher and ingestd: the digest exchange's wire
contract and the one hash both sides compute (docs/PROTOCOL.md, "Reconciliation").

A *cell* is a set of measurement keys: one device (or every device the request lists) over a
range of whole UTC hours. Its digest is the number of rows and the sum, modulo 2⁶⁴, of a 64-bit
hash of each row's key `(device_id, time)`: order-independent and additive, so the digest of a
day is the sum of its hours' digests and the difference between two digests of the same cell
stays put while both sides gain the same new rows.

The row hash is PostgreSQL's own `timestamp_hash_extended(time AT TIME ZONE 'UTC', device_id)`
(`hashint8extended` of the microseconds since 2000-01-01 seeded by the device id): both sides
compute it in SQL next to the rows — the customer database over `monitoring.*`, the central one
over `fleet.*` on either storage path, compressed chunks included — and never ship a key.
`row_hash` is the same function in Python, the reference both SQL paths are checked against
(`HASH_PROBE`: a side whose database computes another value refuses to reconcile).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

import msgspec

__all__ = [
    "DIGEST_MODULUS",
    "HASH_PROBE",
    "HASH_SQL",
    "MAX_CELLS",
    "MAX_DEVICES",
    "MAX_SPAN",
    "CellDigest",
    "DifferingCell",
    "DigestAnswer",
    "DigestCell",
    "DigestRequest",
    "add_hash",
    "format_hash",
    "parse_hash",
    "row_hash",
    "sub_hash",
]

DIGEST_MODULUS = 2**64
HASH_SQL = "timestamp_hash_extended({time} AT TIME ZONE 'UTC', {device})"
"""The row hash in SQL: format with the time and device_id column expressions."""

MAX_CELLS = 5000
"""Cells one digest request may carry (a body over this is refused, 400 invalid_digest)."""
MAX_DEVICES = 10_000
"""Devices one digest request may list."""
MAX_SPAN = timedelta(days=3660)
"""From the earliest cell start to the latest cell end of one request."""

_MASK32 = 0xFFFFFFFF
_PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


def _rot(x: int, k: int) -> int:
    return ((x << k) | (x >> (32 - k))) & _MASK32


def _mix(a: int, b: int, c: int) -> tuple[int, int, int]:
    a = (a - c) & _MASK32
    a ^= _rot(c, 4)
    c = (c + b) & _MASK32
    b = (b - a) & _MASK32
    b ^= _rot(a, 6)
    a = (a + c) & _MASK32
    c = (c - b) & _MASK32
    c ^= _rot(b, 8)
    b = (b + a) & _MASK32
    a = (a - c) & _MASK32
    a ^= _rot(c, 16)
    c = (c + b) & _MASK32
    b = (b - a) & _MASK32
    b ^= _rot(a, 19)
    a = (a + c) & _MASK32
    c = (c - b) & _MASK32
    c ^= _rot(b, 4)
    b = (b + a) & _MASK32
    return a, b, c


def _final(a: int, b: int, c: int) -> tuple[int, int, int]:
    c ^= b
    c = (c - _rot(b, 14)) & _MASK32
    a ^= c
    a = (a - _rot(c, 11)) & _MASK32
    b ^= a
    b = (b - _rot(a, 25)) & _MASK32
    c ^= b
    c = (c - _rot(b, 16)) & _MASK32
    a ^= c
    a = (a - _rot(c, 4)) & _MASK32
    b ^= a
    b = (b - _rot(a, 14)) & _MASK32
    c ^= b
    c = (c - _rot(b, 24)) & _MASK32
    return a, b, c


def row_hash(device_id: int, time: datetime) -> int:
    """The key hash of one row, as an unsigned 64-bit integer: PostgreSQL's
    `hash_bytes_uint32_extended` (Bob Jenkins' lookup3) of the folded microseconds since
    2000-01-01 UTC, seeded by the device id — what `HASH_SQL` computes, bit for bit."""
    delta = time.astimezone(UTC) - _PG_EPOCH
    micros = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    lo, hi = micros & _MASK32, (micros >> 32) & _MASK32
    k = lo ^ (hi if micros >= 0 else ~hi & _MASK32)
    seed = device_id & (DIGEST_MODULUS - 1)
    a = b = c = (0x9E3779B9 + 4 + 3923095) & _MASK32
    if seed:
        a = (a + (seed >> 32)) & _MASK32
        b = (b + (seed & _MASK32)) & _MASK32
        a, b, c = _mix(a, b, c)
    a = (a + k) & _MASK32
    a, b, c = _final(a, b, c)
    return (b << 32) | c


HASH_PROBE = (7, datetime(2026, 1, 1, 12, 34, 56, 789012, tzinfo=UTC))
"""A key whose hash each side checks its database against `row_hash` before it reconciles."""


def add_hash(a: int, b: int) -> int:
    return (a + b) % DIGEST_MODULUS


def sub_hash(a: int, b: int) -> int:
    return (a - b) % DIGEST_MODULUS


def format_hash(value: int) -> str:
    """A digest hash on the wire: 16 lower-case hex digits."""
    return f"{value % DIGEST_MODULUS:016x}"


def parse_hash(text: str) -> int:
    return int(text, 16)


Hex64 = Annotated[str, msgspec.Meta(pattern="^[0-9a-f]{16}$")]
DeviceId = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]
Count = Annotated[int, msgspec.Meta(ge=0, le=2**62)]
Hours = Annotated[int, msgspec.Meta(ge=1, le=int(MAX_SPAN.total_seconds()) // 3600)]
AwareTime = Annotated[datetime, msgspec.Meta(tz=True)]


class DigestCell(msgspec.Struct, frozen=True, forbid_unknown_fields=False):
    """One cell as the pusher holds it: `device` null = every device of the request's
    `devices`; `start` on a whole UTC hour; `hours` long."""

    start: AwareTime
    hours: Hours
    count: Count
    hash: Hex64
    device: DeviceId | None = None

    @property
    def end(self) -> datetime:
        return self.start + timedelta(hours=self.hours)


class DigestRequest(msgspec.Struct, frozen=True):
    """`POST /api/fleet/reconcile`: the cells to compare, over the devices listed."""

    devices: Annotated[list[DeviceId], msgspec.Meta(max_length=MAX_DEVICES)]
    cells: Annotated[list[DigestCell], msgspec.Meta(max_length=MAX_CELLS)]


class DifferingCell(msgspec.Struct, frozen=True):
    """A cell whose central digest is not the pusher's: its index in the request and what the
    centre holds there."""

    index: int
    count: int
    hash: str


class DigestAnswer(msgspec.Struct, frozen=True):
    """ingestd's answer: how many cells it compared, the ones that differ, and the window of
    sample times it accepts (rows outside it would be refused if re-sent)."""

    compared: int
    differing: list[DifferingCell]
    earliest: datetime
    latest: datetime


class CellDigest(msgspec.Struct, frozen=True):
    """(count, hash) of a cell, the hash as an unsigned integer."""

    count: int
    hash: int

    def __add__(self, other: CellDigest) -> CellDigest:
        return CellDigest(self.count + other.count, add_hash(self.hash, other.hash))

    def __sub__(self, other: CellDigest) -> CellDigest:
        return CellDigest(self.count - other.count, sub_hash(self.hash, other.hash))
