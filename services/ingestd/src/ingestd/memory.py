"""The memory budget: bytes of request bodies held at once — received and waiting for a slot,
being decompressed, parsed into rows — bounded by one setting, INGESTD_MEMORY_BUDGET_MB.

Each request takes its share from the budget *before* it holds the bytes: the body's declared
length before reading it (or each chunk's as it arrives), the decompressed output step by step
while inflating (`ingestd.body`'s progress callback), and an upper bound of what parsing and
storing the rows will allocate before the parse starts (`parsed_bytes`). A share the budget
cannot give is a 503 with Retry-After (the bytes are never held), and every share is given back
when the request ends, whatever its outcome. So the sum over all requests stays within the
budget by construction, however many arrive or what they carry; docs/CAPACITY.md shows how the
Deployment's memory limit follows from it.

Shares are taken from the event loop (receiving) and from the decoding threads (inflating), so
the budget is guarded by a lock.
"""

from __future__ import annotations

import threading

from fleetcore import MAX_BATCH_ROWS, MAX_REJECTED_ROWS

from ingestd.errors import ServiceUnavailable

__all__ = ["BodyMemory", "MemoryBudget", "parsed_bytes", "worst_case_bytes"]

_MiB = 1024 * 1024

JSON_PARSED_PER_BYTE = 6
"""Row objects per byte of JSON text, and the COPY buffer built from them: a measurement item of
85 bytes (keys only) becomes ~350 bytes of objects, a full one of ~550 bytes ~900 bytes; its
COPY row is 140-330 bytes. Parsing keys-only rows peaks at ~7.6 bytes per body byte, inside this
with JSON_PER_ITEM (tests/ingestd/test_memory_budget.py measures the worst shapes)."""
JSON_PER_ITEM = 160
"""Per item when rows are looked at one by one (a batch with invalid rows): its raw slice and
index, at most MAX_BATCH_ROWS of them (counted before they are built, fleetcore.jsonscan)."""
COLUMNAR_PER_ROW = 27 * 9 * 3
"""Per declared row of a columnar body: 27 columns of 8 bytes plus a null bit, the validated
copy (`take`), and the COPY buffer."""
_FIXED = 4 * _MiB  # the rejections (≤ MAX_REJECTED_ROWS with their reasons), answer, audit row
_REJECTION = 600


def parsed_bytes(body_bytes: int, *, columnar: bool, rows: int | None = None) -> int:
    """An upper bound of what parsing and storing a decompressed body of `body_bytes` allocates
    (`rows`: the row count a columnar body declares)."""
    fixed = _FIXED + MAX_REJECTED_ROWS * _REJECTION
    if columnar:
        declared = MAX_BATCH_ROWS if rows is None else min(rows, MAX_BATCH_ROWS)
        return fixed + declared * COLUMNAR_PER_ROW
    items = min(MAX_BATCH_ROWS, body_bytes // 2 + 1)
    return fixed + body_bytes * JSON_PARSED_PER_BYTE + items * JSON_PER_ITEM


def worst_case_bytes(max_wire_bytes: int, max_body_bytes: int) -> int:
    """What one body at every limit may take: its wire bytes, its decompressed bytes and its rows."""
    return max_wire_bytes + max_body_bytes + parsed_bytes(max_body_bytes, columnar=False)


class MemoryBudget:
    """Bytes the process may hold for request bodies, shared out by `BodyMemory`."""

    def __init__(self, total: int) -> None:
        self.total = total
        self._used = 0
        self._lock = threading.Lock()
        self.refused = 0

    @property
    def used(self) -> int:
        return self._used

    def take(self, n: int) -> bool:
        with self._lock:
            if self._used + n > self.total:
                self.refused += 1
                return False
            self._used += n
            return True

    def give(self, n: int) -> None:
        with self._lock:
            self._used -= n


class BodyMemory:
    """One request's share of the budget, in named parts ("wire", "body", "parsed") that grow
    as the work goes and are given back part by part or all at once (`release`)."""

    def __init__(self, budget: MemoryBudget, retry_after_s: int) -> None:
        self._budget = budget
        self._retry_after_s = retry_after_s
        self._parts: dict[str, int] = {}

    @property
    def held(self) -> int:
        return sum(self._parts.values())

    def hold(self, part: str, n: int) -> None:
        """Grow `part` to `n` bytes (never shrinks it); 503 when the budget cannot give them."""
        more = n - self._parts.get(part, 0)
        if more <= 0:
            return
        if not self._budget.take(more):
            raise ServiceUnavailable(
                self._retry_after_s, "memory budget for request bodies is spent, retry later"
            )
        self._parts[part] = n

    def drop(self, part: str) -> None:
        self._budget.give(self._parts.pop(part, 0))

    def move(self, source: str, target: str) -> None:
        """The bytes of `source` are now `target`'s (an uncompressed body is its wire bytes)."""
        self._parts[target] = self._parts.get(target, 0) + self._parts.pop(source, 0)

    def release(self) -> None:
        self._budget.give(self.held)
        self._parts.clear()
