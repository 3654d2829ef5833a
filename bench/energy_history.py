"""The data set of `bench/read_latency.py`: devices x days of rows generated in SQL straight into
the stored table (a slowly varying load, registers that integrate it exactly), the hourly and
quarter-hour aggregates computed set-based with the housekeeping's own aggregate expressions
(or the continuous aggregates refreshed, on TimescaleDB), then the stored energy backfilled by
the housekeeping's own function.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import psycopg
from ingestd.storage.aggregate import (
    AGGREGATE_COLUMNS,
    COUNTER_COLUMNS,
    ENERGY_COUNTERS,
    PLAIN_AGGREGATE_SELECT,
    PLAIN_BUCKET,
)
from ingestd.storage.energy_upkeep import advance_stored_energy
from ingestd.storage.layout import STORED_TABLE
from ingestd.storage.partitions import WEEK, ensure_partitions
from ingestd.storage.quarters import QUARTER_COLUMNS
from psycopg import AsyncConnection

__all__ = ["asyncio_run", "backfill_stored_energy", "build_history"]

# A load between 5 and 45 kW that varies over the day; registers integrate it exactly. Written
# straight into the stored table's "as sent" columns (what the readers' view reads back).
LOAD = f"""
INSERT INTO {STORED_TABLE}
    (time, customer_id, device_id, received_at, p_total, v1, i1, energy_imp_kwh, energy_exp_kwh,
     energy_q_imp_kvarh, energy_q_exp_kvarh)
SELECT t, %(customer)s, d, t, 25 + 20 * sin(x), 230, 40,
       1000 * d + 25 * h - 20 * (cos(x) - 1) * 24 / (2 * pi()), 0, 100 + 5 * h, 0
FROM generate_series(1, %(devices)s) AS d,
     generate_series(%(start)s::timestamptz, %(end)s::timestamptz - interval '1 microsecond',
                     make_interval(secs => %(interval)s)) AS t,
     LATERAL (SELECT extract(epoch FROM t - %(origin)s::timestamptz) / 3600 AS h) AS hours,
     LATERAL (SELECT 2 * pi() * h / 24 AS x) AS phase
"""
_RANGE = "WHERE m.time >= %(start)s AND m.time < %(end)s GROUP BY 1, 2, 3"
HOURLY = f"""INSERT INTO fleet.hourly_rollup ({", ".join(AGGREGATE_COLUMNS)})
SELECT {PLAIN_BUCKET}, m.customer_id, m.device_id, {PLAIN_AGGREGATE_SELECT}
FROM {STORED_TABLE} m {_RANGE}"""
QUARTERS = f"""INSERT INTO fleet.quarter_rollup ({", ".join(QUARTER_COLUMNS)})
SELECT date_bin(INTERVAL '15 minutes', m.time, TIMESTAMPTZ '2000-01-01 00:00:00+00'),
       m.customer_id, m.device_id, count(*),
       {", ".join(f"fleet.counter_of({ENERGY_COUNTERS}, {k})" for k in range(1, len(COUNTER_COLUMNS) + 1))}
FROM {STORED_TABLE} m {_RANGE}"""
REFRESH = "CALL refresh_continuous_aggregate(%s, %s, %s)"


def build_history(
    dsn: str, customer: int, args: argparse.Namespace, origin: datetime
) -> dict[str, float]:
    """Generate the rows and aggregate them, a month per statement; seconds of each step."""
    seconds: dict[str, float] = {}
    end = origin + timedelta(days=args.days)
    months = []
    moment = origin
    while moment < end:
        months.append((moment, min(end, moment + timedelta(days=30))))
        moment = months[-1][1]
    with psycopg.connect(dsn, autocommit=True) as conn:
        if not args.timescale:
            asyncio_run(
                ensure_partitions, dsn, [origin + WEEK * i for i in range(args.days // 7 + 2)]
            )
        started = time.perf_counter()
        for start, upto in months:
            conn.execute(LOAD, {"customer": customer, "devices": args.devices, "start": start,
                                "end": upto, "interval": args.interval_s, "origin": origin})  # fmt: skip
            print(f"  loaded up to {upto:%Y-%m-%d}", flush=True)
        conn.execute(f"ANALYZE {STORED_TABLE}")
        seconds["load_s"] = time.perf_counter() - started
        started = time.perf_counter()
        conn.execute("SET jit = off")
        if args.timescale:
            for view in ("fleet.hourly_per_device", "fleet.quarter_per_device"):
                conn.execute(REFRESH, (view, origin, end))
        else:
            for start, upto in months:
                conn.execute(HOURLY, {"start": start, "end": upto})
                conn.execute(QUARTERS, {"start": start, "end": upto})
            # VACUUM as autovacuum does on a running system after so many inserts: the
            # visibility map lets the reads use the covering keys without the heap
            conn.execute("VACUUM ANALYZE fleet.hourly_rollup")
            conn.execute("VACUUM ANALYZE fleet.quarter_rollup")
        seconds["aggregate_s"] = time.perf_counter() - started
    return seconds


def asyncio_run(function: Callable[..., Any], dsn: str, *args: Any) -> Any:
    """Run an async storage function on a connection of its own."""
    import asyncio

    async def run() -> Any:
        async with await AsyncConnection.connect(dsn, autocommit=True) as conn:
            return await function(conn, *args)

    return asyncio.run(run())


def backfill_stored_energy(dsn: str, timescale: bool) -> float:
    """The housekeeping's backfill of the stored energy, run until every device is caught up."""
    started = time.perf_counter()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO fleet.energy_frontier (customer_id, device_id) "
                     "SELECT customer_id, id FROM fleet.devices ON CONFLICT DO NOTHING")  # fmt: skip

    async def advance(conn: AsyncConnection[Any]) -> int:
        return await advance_stored_energy(
            conn, settle_s=0.0, budget_hours=20000, hold=not timescale
        )

    while asyncio_run(advance, dsn):
        pass
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE fleet.energy_hours")
    return time.perf_counter() - started
