"""The fleet-state task: derive every gateway's and meter's state, store them, publish the counts.

Every INGESTD_FLEET_STATE_INTERVAL_S (or less often, see `next_round_in`): the gateways this replica heard from since the last round
get their last contact written (`contacts`); then, on a pooled connection, whichever replica
gets the turn (a transaction-level advisory lock) reads the inputs in one snapshot, classifies every
gateway (`fleetstate`) and every live device, and stores the states (`fleet.gateways.states`,
`fleet.device_states`, in a second transaction: `derive_fleet_states`) for the dashboard; then every replica reads the stored counts into its Prometheus figures
(`FleetFigures`, served by `metrics.IngestMetrics`). Counts only — by state and by version —
never a label per gateway or customer. A failed round is logged and retried at the next.

The meter states cost what the fleet's size costs: each live meter's last day of hourly summaries
is read, ~2-8 ms of PostgreSQL per meter (the hour still being written is computed from its raw
rows on plain PostgreSQL), so 110,000 meters (4,000 gateways) made one round of minutes, in one
transaction on a pool connection, run back to back on most of a database core. So a round
classifies the meters of the next slice of customers only (`MeterSweep`, in customer id order,
wrapping around), and the next slice waits at least `DUTY_FACTOR` times as long as the last one
took: the derivation takes at most a tenth of one connection's time. A slice is sized to read
its meters in about `SLICE_TARGET_S` (from the last slice's time): a slice of 200 customers read
~5,500 meters in 10-15 s, holding a pool connection and a database core that long, and on a
2-core node the ingest path's batches queued behind it and were refused 503 busy (issue 26). So
between the gateways' rounds (every INGESTD_FLEET_STATE_INTERVAL_S) short slices follow one
another; once a slice has reached the last customer the sweep waits for the next gateways' round
— a small fleet is one slice, classified every round as before; at 10,000 gateways a meter's
state is refreshed every few hours. (Each replica keeps its own sweep: with several, the one
holding the turn classifies its next slice.)
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg
import structlog
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from ingestd.contacts import Contacts
from ingestd.fleetstate import HealthPolicy, gateway_states, meter_state
from ingestd.pooled import pooled_transaction
from ingestd.storage.gateways import (
    fleet_totals,
    gateway_rows,
    record_contacts,
    take_state_turn,
    write_gateway_states,
)
from ingestd.storage.meters import (
    customer_slice,
    device_state_counts,
    meter_rows,
    write_device_states,
)
from ingestd.storage.snapshots import read_snapshot

__all__ = [
    "DUTY_FACTOR",
    "MAX_SLICE_CUSTOMERS",
    "MAX_VERSIONS",
    "METER_SLICE_CUSTOMERS",
    "SLICE_TARGET_S",
    "FleetFigures",
    "MeterSweep",
    "derive_fleet_states",
    "fleet_state_loop",
    "next_round_in",
]

log = structlog.get_logger("ingestd.fleet")

MAX_VERSIONS = 20
"""Versions reported by name in the figures; the rest are summed as `other`."""

METER_SLICE_CUSTOMERS = 10
"""Customers of the first slice (then sized to `SLICE_TARGET_S`: ~275 meters at 27.5 a customer)."""
MAX_SLICE_CUSTOMERS = 200
SLICE_TARGET_S = 0.25
"""How long reading a slice's meters should take: a pool connection and a database core held no
longer than that at once."""
SLICE_PAUSE_MIN_S = 1.0

DUTY_FACTOR = 9.0
"""The pause after a round is at least this many times the round's own duration (a 10 % duty)."""


def next_round_in(interval_s: float, round_s: float) -> float:
    """Seconds to wait before the next round: the interval, or longer after a long round."""
    return max(interval_s, DUTY_FACTOR * round_s)


@dataclass(slots=True)
class FleetFigures:
    """What the last round found; read by the metrics collector at each scrape."""

    gateways: dict[str, int] = field(default_factory=dict)
    versions: dict[str, int] = field(default_factory=dict)
    meters: dict[str, int] = field(default_factory=dict)
    known: int = 0
    quarantined_rows: int = 0
    max_lag_s: float = 0.0
    min_disk_free_bytes: int | None = None
    updated: float | None = None  # time.time() of the last successful round


@dataclass(slots=True)
class MeterSweep:
    """Where the rounds are in the customers: the next slice starts after the id `after` and
    holds `customers` customers, sized after each slice so its meters are read in about
    `target_s` (None: a fixed size); `reporting` is what the last gateways' round found (customer
    id: a live gateway reports), for the slices between two of them; `wrapped`: the last slice
    reached the last customer."""

    customers: int = METER_SLICE_CUSTOMERS
    after: int = 0
    target_s: float | None = SLICE_TARGET_S
    reporting: dict[int, bool] | None = None
    wrapped: bool = False

    def measured(self, seconds: float, meters: int) -> None:
        """The last slice's `meters` took `seconds` to read: the next slice's size follows (at
        most doubled or quartered at once; a slice without meters says nothing of their cost)."""
        if self.target_s is not None and meters:
            ratio = min(2.0, max(0.25, self.target_s / max(seconds, 1e-3)))
            self.customers = max(1, min(MAX_SLICE_CUSTOMERS, round(self.customers * ratio)))

    async def next_slice(self, conn: AsyncConnection[Any]) -> tuple[int, int] | None:
        """The inclusive customer id range of this round's slice (None: no customers), and move
        on: after the last customer, the next round starts from the first again."""
        first, last, count = await customer_slice(conn, self.after, self.customers)
        if not count and self.after:
            first, last, count = await customer_slice(conn, 0, self.customers)
        self.after = last if count == self.customers else 0
        self.wrapped = self.after == 0
        return (first, last) if count else None


async def derive_fleet_states(
    conn: AsyncConnection[Any],
    policy: HealthPolicy,
    stale_after_s: float,
    sweep: MeterSweep | None = None,
    *,
    gateways: bool = True,
) -> tuple[int, int] | None:
    """Classify and store every gateway's state and the live devices' states (those of the
    sweep's next slice of customers, or of all without one): (gateways, devices), or None when
    another replica has the turn. `conn` is autocommit or idle; the round is two transactions.
    Without `gateways` (a slice between two gateways' rounds) the gateways are neither read nor
    written: the meters are classified with what the sweep's last gateways' round found.

    What the states are derived from is read in a read-only REPEATABLE READ transaction
    (`storage.snapshots`): under READ COMMITTED a read of the hourly aggregate racing its refresh
    on TimescaleDB can miss the latest hour, and a meter classified from that keeps the wrong
    state until its customer's next sweep, hours later at fleet scale. The states are written in
    a READ COMMITTED transaction of their own: the contacts update the same gateway rows, which
    would fail a REPEATABLE READ writer. Each takes the turn; a replica that loses it between the
    two writes nothing (its sweep has moved on: that slice waits for the next time round)."""
    now = datetime.now(UTC)
    earlier = sweep.reporting if sweep is not None and not gateways else None
    async with read_snapshot(conn):
        if not await take_state_turn(conn):
            return None
        rows = await gateway_rows(conn) if earlier is None else []
        customers = await sweep.next_slice(conn) if sweep is not None else None
        started = time.perf_counter()
        meters = await meter_rows(
            conn,
            customer=None,
            frozen_min_kw=policy.meter_frozen_min_kw,
            rated_kw=policy.meter_rated_kw,
            customers=customers,
        )
        if sweep is not None:
            sweep.measured(time.perf_counter() - started, len(meters))
    states = [(g["token_hash"], gateway_states(g, now, policy)) for g in rows]
    reporting: dict[int, bool] = {}
    for g, names in zip(rows, states, strict=True):
        live = not {"silent", "retired"} & set(names[1])
        reporting[g["customer_id"]] = reporting.get(g["customer_id"], False) or live
    if earlier is not None:
        reporting = earlier
    elif sweep is not None:
        sweep.reporting = reporting
    derived = []
    for m in meters:
        known = reporting.get(m["customer_id"])
        if known is None:  # no reports from this customer: its batches tell whether it is there
            seen = m["customer_seen_at"]
            known = seen is not None and (now - seen).total_seconds() <= stale_after_s
        derived.append((m["customer_id"], m["device_id"], meter_state(m, now, known, policy)))
    async with conn.transaction():
        if not await take_state_turn(conn):
            return None
        if earlier is None:
            await write_gateway_states(conn, states)
        await write_device_states(conn, derived)
    return len(rows), len(derived)


async def _read_figures(conn: AsyncConnection[Any], figures: FleetFigures) -> None:
    states, versions, totals = await fleet_totals(conn)
    named = dict(versions[:MAX_VERSIONS])
    rest = sum(n for _, n in versions[MAX_VERSIONS:])
    if rest:
        named["other"] = named.get("other", 0) + rest
    figures.gateways = states
    figures.versions = named
    figures.meters = await device_state_counts(conn)
    figures.known, figures.quarantined_rows, figures.max_lag_s, figures.min_disk_free_bytes = totals
    figures.updated = time.time()


async def fleet_state_loop(
    pool: AsyncConnectionPool[AsyncConnection[Any]],
    contacts: Contacts,
    policy: HealthPolicy,
    stale_after_s: float,
    figures: FleetFigures,
    timeout_s: float,
) -> None:
    """Until cancelled: a gateways' round (contacts, every gateway's state, the figures, and a
    slice of meters) every `policy.state_interval_s` (or less often, `next_round_in`), and
    between them slices of meters, each after `DUTY_FACTOR` times the last one's duration, until
    the sweep reaches the last customer; survive database outages."""
    sweep = MeterSweep()
    next_gateways = 0.0
    while True:
        took, waiting = 0.0, True  # waiting: until the next gateways' round (failed, not our turn)
        gateways = time.monotonic() >= next_gateways
        try:
            if gateways:
                async with pool.connection(timeout=timeout_s) as conn:
                    await record_contacts(conn, contacts.take())
            async with pool.connection(timeout=timeout_s) as conn:
                started = time.perf_counter()
                derived = await derive_fleet_states(
                    conn, policy, stale_after_s, sweep, gateways=gateways
                )
                if derived is not None:
                    took, waiting = time.perf_counter() - started, False
                    log.debug("fleet_states", gateways=derived[0], devices=derived[1],
                              duration_ms=round(took * 1000, 1))  # fmt: skip
            if gateways:
                async with pooled_transaction(pool, timeout_s) as conn:
                    await _read_figures(conn, figures)
        except (psycopg.Error, PoolTimeout) as exc:
            log.warning("fleet_states_failed", error=type(exc).__name__, detail=str(exc)[:200])
            waiting = True
        now = time.monotonic()
        if gateways:
            next_gateways = now + next_round_in(policy.state_interval_s, took)
        if waiting or sweep.wrapped:
            await asyncio.sleep(max(0.0, next_gateways - now))
        else:
            pause = max(SLICE_PAUSE_MIN_S, DUTY_FACTOR * took)
            await asyncio.sleep(max(0.0, min(pause, next_gateways - now)))
