"""Reconciliation's own state in the customer database (migration 0004).

`app.fleet_reconcile_state`: one row — the central database identity last seen, the last
pass (when, result, what it compared and re-sent) and running totals, for `pusher status` and
the next start. `app.fleet_reconcile_known`: the known differences, per device and UTC hour the
centre-minus-gateway delta of (count, key-hash sum) that a re-send could not remove (rows
deleted here but kept centrally, rows the centre refuses); a pass expects them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from fleetcore.reconcile import CellDigest
from psycopg.rows import dict_row, tuple_row

from pusher.errors import SourceError

__all__ = [
    "KnownDeltas",
    "PassRecord",
    "forget_known",
    "load_known",
    "load_reconcile_state",
    "note_identity",
    "record_pass",
    "remember_known",
]

KnownDeltas = dict[tuple[int, datetime], CellDigest]
"""(device_id, UTC hour) -> centre minus gateway, as the last re-send there left it."""

LOAD_STATE = "SELECT * FROM app.fleet_reconcile_state"

NOTE_IDENTITY = """
INSERT INTO app.fleet_reconcile_state (identity) VALUES (%(identity)s)
ON CONFLICT (id) DO UPDATE SET identity = EXCLUDED.identity
"""

RECORD_PASS = """
INSERT INTO app.fleet_reconcile_state AS s (identity, last_pass_at, last_result, last_error,
    last_compared_cells, last_repaired_cells, last_rows_resent, last_rows_restored,
    last_duration_s, last_repair_at, passes, cells_repaired, rows_resent, rows_restored,
    bytes_sent)
VALUES (%(identity)s, now(), %(result)s, %(error)s, %(compared)s, %(repaired)s, %(resent)s,
    %(restored)s, %(duration_s)s, CASE WHEN %(resent)s > 0 THEN now() END, 1, %(repaired)s,
    %(resent)s, %(restored)s, %(bytes)s)
ON CONFLICT (id) DO UPDATE SET
    identity = coalesce(EXCLUDED.identity, s.identity),
    last_pass_at = now(), last_result = EXCLUDED.last_result, last_error = EXCLUDED.last_error,
    last_compared_cells = EXCLUDED.last_compared_cells,
    last_repaired_cells = EXCLUDED.last_repaired_cells,
    last_rows_resent = EXCLUDED.last_rows_resent,
    last_rows_restored = EXCLUDED.last_rows_restored,
    last_duration_s = EXCLUDED.last_duration_s,
    last_repair_at = coalesce(EXCLUDED.last_repair_at, s.last_repair_at),
    passes = s.passes + 1, cells_repaired = s.cells_repaired + EXCLUDED.cells_repaired,
    rows_resent = s.rows_resent + EXCLUDED.rows_resent,
    rows_restored = s.rows_restored + EXCLUDED.rows_restored,
    bytes_sent = s.bytes_sent + EXCLUDED.bytes_sent
"""

LOAD_KNOWN = """
SELECT device_id, hour, count_delta, hash_delta FROM app.fleet_reconcile_known
WHERE hour >= %(from)s
"""

REMEMBER_KNOWN = """
INSERT INTO app.fleet_reconcile_known (device_id, hour, count_delta, hash_delta)
SELECT * FROM unnest(%(devices)s::bigint[], %(hours)s::timestamptz[], %(counts)s::bigint[],
                     %(hashes)s::numeric[])
ON CONFLICT (device_id, hour) DO UPDATE SET count_delta = EXCLUDED.count_delta,
    hash_delta = EXCLUDED.hash_delta, noted_at = now()
"""

FORGET_KNOWN = """
DELETE FROM app.fleet_reconcile_known AS k
USING unnest(%(devices)s::bigint[], %(hours)s::timestamptz[]) AS c(device_id, hour)
WHERE k.device_id = c.device_id AND k.hour = c.hour
"""

FORGET_OLD = "DELETE FROM app.fleet_reconcile_known WHERE hour < %(from)s"

COUNT_KNOWN = "SELECT count(*) FROM app.fleet_reconcile_known"


@dataclass(frozen=True, slots=True)
class PassRecord:
    """What one pass did, as kept in the state row."""

    result: str  # "in_sync", "repaired", "failed"
    compared: int
    repaired: int
    resent: int
    restored: int
    duration_s: float
    bytes_sent: int
    error: str | None = None


async def load_reconcile_state(conn: psycopg.AsyncConnection[Any]) -> dict[str, Any]:
    """The state row as a dict (empty before the first pass) plus `known_differences`."""
    try:
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(LOAD_STATE)
            row = await cur.fetchone()
        async with conn.cursor(row_factory=tuple_row) as cur:
            await cur.execute(COUNT_KNOWN)
            known = await cur.fetchone()
    except psycopg.errors.UndefinedTable as exc:
        raise SourceError("the customer database is not migrated: run `pusher migrate`") from exc
    state = dict(row or {})
    state.pop("id", None)
    state["known_differences"] = int(known[0]) if known else 0
    return state


async def note_identity(conn: psycopg.AsyncConnection[Any], identity: str) -> None:
    await conn.execute(NOTE_IDENTITY, {"identity": identity})


async def record_pass(
    conn: psycopg.AsyncConnection[Any], record: PassRecord, identity: str | None
) -> None:
    await conn.execute(
        RECORD_PASS,
        {
            "identity": identity,
            "result": record.result,
            "error": (record.error or "")[:2000].replace("\x00", "?") or None,
            "compared": record.compared,
            "repaired": record.repaired,
            "resent": record.resent,
            "restored": record.restored,
            "duration_s": record.duration_s,
            "bytes": record.bytes_sent,
        },
    )


async def load_known(conn: psycopg.AsyncConnection[Any], start: datetime) -> KnownDeltas:
    """The known differences from `start` on; older ones are dropped (out of the horizon)."""
    await conn.execute(FORGET_OLD, {"from": start})
    async with conn.cursor(row_factory=tuple_row) as cur:
        await cur.execute(LOAD_KNOWN, {"from": start})
        rows = await cur.fetchall()
    return {(int(r[0]), r[1]): CellDigest(int(r[2]), int(r[3]) % 2**64) for r in rows}


async def remember_known(conn: psycopg.AsyncConnection[Any], deltas: KnownDeltas) -> None:
    if deltas:
        keys = sorted(deltas)
        await conn.execute(
            REMEMBER_KNOWN,
            {
                "devices": [k[0] for k in keys],
                "hours": [k[1] for k in keys],
                "counts": [deltas[k].count for k in keys],
                "hashes": [deltas[k].hash for k in keys],
            },
        )


async def forget_known(
    conn: psycopg.AsyncConnection[Any], cells: Iterable[tuple[int, datetime]]
) -> None:
    keys = sorted(cells)
    if keys:
        await conn.execute(
            FORGET_KNOWN, {"devices": [k[0] for k in keys], "hours": [k[1] for k in keys]}
        )
