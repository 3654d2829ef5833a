"""One reconciliation pass: compare, drill down, re-send, remember (docs/PROTOCOL.md).

    check the row hash → read the gateway's buckets → root cell → [digest request → split the
    differing cells] until only leaves (device-hours) differ → re-send their rows as repair
    batches → compare the leaves again (when the re-send stored nothing new) → remember what
    still differs as known differences

The pass reads the cursor once: rows after it are the push's, not compared. It uses the
daemon's `IngestClient` (one connection, the upload cap) and its customer database session;
`pusher reconcile` gives it its own. A delivery error ends the pass (`PassFailed`): nothing is
remembered from a pass that did not finish, the next one starts over.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import structlog
from fleetcore import PushCursor
from fleetcore.protocol import BatchType, WireFormat
from fleetcore.reconcile import MAX_CELLS, CellDigest, DigestRequest, parse_hash

from pusher.delivery.client import IngestClient
from pusher.delivery.wire import encode
from pusher.errors import PayloadTooLarge, PusherError, SourceError
from pusher.reconcile.cells import HOUR, Cell, DigestIndex, HourlyDigests, ceil_hour, floor_hour
from pusher.source.columns import BatchBuilder
from pusher.source.digests import hash_matches, read_buckets, read_devices_held, read_repair_page
from pusher.state import load_states
from pusher.state.reconcile_state import KnownDeltas, forget_known, load_known, remember_known

__all__ = ["PassFailed", "PassReport", "run_pass"]

log = structlog.get_logger("pusher")


class PassFailed(PusherError):
    """The pass could not finish (ingestd unreachable or refusing, the database failing)."""


@dataclass(slots=True)
class PassReport:
    """What a pass compared and re-sent."""

    start: datetime | None = None
    end: datetime | None = None
    devices: int = 0
    compared: int = 0
    requests: int = 0
    repaired: int = 0
    resent: int = 0
    restored: int = 0
    rejected: int = 0
    known: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    duration_s: float = 0.0
    window_start: datetime | None = None  # the oldest sample time the centre accepts
    repaired_hours: list[str] = field(default_factory=list)

    @property
    def result(self) -> str:
        return "repaired" if self.resent else "in_sync"

    def line(self) -> str:
        """The one line `pusher reconcile` prints."""
        span = (
            f"{self.start:%Y-%m-%dT%H}Z..{self.end:%Y-%m-%dT%H}Z"
            if self.start and self.end
            else "nothing shipped yet"
        )
        return (
            f"{self.result}: compared {self.compared} cells ({self.devices} devices, {span}) in "
            f"{self.requests} requests; re-sent {self.resent} rows of {self.repaired} device-hours, "
            f"{self.restored} stored again, {self.rejected} refused; {self.known} known "
            f"differences; {self.bytes_sent} bytes sent, {self.bytes_received} received"
        )

    def as_log(self) -> dict[str, Any]:
        return {
            "result": self.result,
            "compared": self.compared,
            "requests": self.requests,
            "repaired_cells": self.repaired,
            "rows_resent": self.resent,
            "rows_restored": self.restored,
            "rows_refused": self.rejected,
            "known_differences": self.known,
            "bytes_sent": self.bytes_sent,
            "bytes_received": self.bytes_received,
            "duration_s": round(self.duration_s, 3),
            "repaired_hours": self.repaired_hours[:20],
        }


@dataclass
class _Pass:
    conn: psycopg.AsyncConnection[Any]
    client: IngestClient
    devices: list[int]
    local: HourlyDigests
    known: DigestIndex
    report: PassReport
    earliest: datetime | None = None

    def expected(self, cell: Cell) -> CellDigest:
        return self.local.of(cell) + self.known.of(cell)

    async def differing(
        self, cells: list[Cell], *, with_known: bool = True
    ) -> list[tuple[Cell, CellDigest]]:
        """The cells whose central digest is not the expected one, with the centre's digest."""
        found: list[tuple[Cell, CellDigest]] = []
        for first in range(0, len(cells), MAX_CELLS):
            chunk = cells[first : first + MAX_CELLS]
            wire = [c.on_wire(self.expected(c) if with_known else self.local.of(c)) for c in chunk]
            answer = await self.client.digests(DigestRequest(self.devices, wire))
            self.report.requests += 1
            self.report.compared += len(chunk)
            self.earliest = self.report.window_start = answer.earliest
            found.extend(
                (chunk[d.index], CellDigest(d.count, parse_hash(d.hash))) for d in answer.differing
            )
        return found


async def run_pass(
    conn: psycopg.AsyncConnection[Any],
    client: IngestClient,
    *,
    horizon: timedelta,
    batch_size: int,
    earliest: datetime | None = None,
    build: BatchBuilder | None = None,
) -> PassReport:
    """One pass over the horizon (at most `horizon` back, from the oldest row held, inside the
    centre's window: `earliest` when a previous answer told it); raises PassFailed."""
    started = time.monotonic()
    sent0, received0 = client.sent_bytes, client.received_bytes
    report = PassReport()
    try:
        await _run(conn, client, report, horizon, batch_size, earliest, build)
    except PusherError as exc:
        raise PassFailed(str(exc)) from exc
    except psycopg.Error as exc:
        raise PassFailed(f"customer database: {type(exc).__name__}: {exc}") from exc
    finally:
        report.bytes_sent = client.sent_bytes - sent0
        report.bytes_received = client.received_bytes - received0
        report.duration_s = time.monotonic() - started
    return report


async def _run(
    conn: psycopg.AsyncConnection[Any],
    client: IngestClient,
    report: PassReport,
    horizon: timedelta,
    batch_size: int,
    earliest: datetime | None,
    build: BatchBuilder | None,
) -> None:
    if not await hash_matches(conn):
        raise SourceError("this PostgreSQL computes another row hash than the protocol's")
    states = await load_states(conn)
    state = states.get(BatchType.MEASUREMENTS)
    held = await read_devices_held(conn)
    if state is None or not held or state.last_success_at is None:
        return  # nothing shipped yet: nothing the centre should hold
    now = datetime.now(UTC)
    start = max(floor_hour(min(held.values())), floor_hour(now - horizon))
    if earliest is not None:
        start = max(start, ceil_hour(earliest))
    end = floor_hour(now) + HOUR
    devices = sorted(held)
    cursor = state.cursor
    run = _Pass(conn, client, devices, HourlyDigests(devices, start, 0), DigestIndex({}), report)
    for attempt in range(2):
        if start >= end:
            return
        report.start, report.end, report.devices = start, end, len(devices)
        run.local = HourlyDigests(devices, start, int((end - start) / HOUR))
        async for device, hour, digest in read_buckets(conn, devices, start, end, cursor):
            run.local.add(device, hour, digest)
        known = await load_known(conn, start)
        run.known = DigestIndex(known)
        root = Cell(start, int((end - start) / HOUR))
        differing = await run.differing([root])
        if attempt == 0 and run.earliest is not None and ceil_hour(run.earliest) > start:
            start = ceil_hour(run.earliest)  # the centre refuses older rows: compare within
            continue
        break
    leaves: list[tuple[Cell, CellDigest]] = []
    while differing:
        leaves.extend(d for d in differing if d[0].leaf)
        children = [c for cell, _ in differing if not cell.leaf for c in cell.split(devices)]
        differing = await run.differing(children) if children else []
    if leaves:
        await _repair(run, [cell for cell, _ in leaves], cursor, batch_size, build)
    report.known = len(await load_known(conn, start))


def _groups(
    run: _Pass, keys: list[tuple[int, datetime]], rows: int
) -> list[list[tuple[int, datetime]]]:
    """The device-hours in runs of about `rows` rows (their counts are known), so that each
    read covers the cells of one batch only."""
    groups: list[list[tuple[int, datetime]]] = []
    current: list[tuple[int, datetime]] = []
    total = 0
    for key in sorted(keys):
        count = run.local.get(*key).count
        if current and total + count > rows:
            groups.append(current)
            current, total = [], 0
        current.append(key)
        total += count
    return [*groups, current] if current else groups


async def _resend(
    run: _Pass,
    cells: list[tuple[int, datetime]],
    cursor: PushCursor,
    batch_size: int,
    build: BatchBuilder | None,
) -> None:
    """The cells' rows as repair batches of at most `batch_size` rows (halved on ingestd's 413)."""
    report = run.report
    after = None
    size = batch_size
    while True:
        page = await read_repair_page(
            run.conn,
            cells,
            cursor,
            after,
            size,
            columnar=run.client.format is WireFormat.COLUMNAR,
            build=build,
        )
        batch = page.batch
        if batch.sent:
            wire = await encode(batch.body, batch.format, run.client.gzip_level)
            try:
                answer = await run.client.send(
                    BatchType.MEASUREMENTS.value, wire, None, rows=batch.sent, repair=True
                )
            except PayloadTooLarge as exc:
                if size == 1 or not exc.protocol:
                    raise
                size = max(1, size // 2)  # read the same rows again, in smaller batches
                continue
            report.resent += batch.sent
            report.restored += answer.accepted
            report.rejected += answer.rejected
        if page.after is None:
            return
        after = page.after


async def _repair(
    run: _Pass, leaves: list[Cell], cursor: PushCursor, batch_size: int, build: BatchBuilder | None
) -> None:
    """Re-send the leaves' rows as repair batches, compare them again, remember what stays —
    when the re-send stored nothing new. When it did, what still differs may be a loss that
    happened meanwhile (a deletion centrally, racing the repair): remembered as a known
    difference it would never be repaired, so the next pass compares and re-sends it again."""
    report = run.report
    restored_before = report.restored
    keys = [(c.device, c.start) for c in leaves if c.device is not None]
    to_send = [k for k, c in zip(keys, leaves, strict=True) if run.local.of(c).count > 0]
    report.repaired = len(to_send)
    report.repaired_hours = sorted({f"{k[1]:%Y-%m-%dT%H}Z" for k in to_send})
    for group in _groups(run, to_send, batch_size):
        await _resend(run, group, cursor, batch_size, build)
    deltas: KnownDeltas = {}
    if report.restored == restored_before:
        for cell, central in await run.differing(leaves, with_known=False):
            assert cell.device is not None
            deltas[(cell.device, cell.start)] = central - run.local.of(cell)
    await remember_known(run.conn, deltas)
    await forget_known(run.conn, [k for k in keys if k not in deltas])
    if deltas:
        log.info("reconcile_known_differences", cells=len(deltas), hours=sorted(
            {f"{k[1]:%Y-%m-%dT%H}Z" for k in deltas})[:20])  # fmt: skip
