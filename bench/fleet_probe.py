"""What the fleet bench watches while gateways push: ingestd's process tree from /proc, the
generator's own CPU and loop lag, and the central database's connections and rollup backlog.

The backlog is what the hourly aggregate still owes:
- plain PostgreSQL: the marks in `fleet.hourly_dirty` (and their row writes: inserts + updates,
  their churn apart from the count);
- TimescaleDB: the continuous aggregates' invalidation logs (hypertable and materialization:
  ranges changed below the refresh threshold and not refreshed yet), how far the most-behind
  aggregate's watermark is behind now, and the marks ingestd keeps for back-fills older than the
  refresh policy's window (`fleet.hourly_dirty`, usually empty);
- both: the devices whose stored energy's frontier step is due and not done (after an hour's
  end every device's, until the housekeeping's rounds have moved them all).

With `metrics_url` (ingestd's /metrics) each sample also takes ingestd's own view (`admission`):
its admission (slots in use, the waiting line, the measured capacity, how far ahead returns are
booked, the capacity refusals by reason so far), how many of its event loop's 50 ms wakes came
over 0.1 s and 0.25 s late so far, and the requests waiting for a pool connection.

`window` turns the samples of a time window into shares of a core and the backlog's slope (a
least-squares line over the samples, per minute): a rollup that keeps up has a slope near 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
from common import cpu_seconds, postgres_cpu_seconds, rss_bytes
from fleetdev.pgcluster import PgCluster
from prometheus_client.parser import text_string_to_metric_families
from simulator import Fleet

__all__ = ["Sampler", "process_tree", "slope_per_min", "tree_cpu_and_rss", "window"]

# Devices whose stored energy (docs/ENERGY.md) is behind the hour that ended 90 s ago (the
# default INGESTD_ROLLUP_SETTLE_S), as far as the store's summaries reach (TimescaleDB: the
# aggregate's watermark): the frontier steps due and not yet done — apart, the devices with
# energy stored before (a backlog) and the new ones, none stored yet (a fleet's first minutes
# bring every device; on TimescaleDB a new device's first hour waits for the watermark).
_BEHIND = """(SELECT count(*) FROM fleet.energy_frontier
        WHERE stored_until < least(fleet.energy_horizon(),
                                   date_bin('1 hour', now() - INTERVAL '90 seconds', 'epoch'))
          AND stored_until {} '-infinity')"""
FRONTIERS_BEHIND = f"{_BEHIND.format('>')},\n       {_BEHIND.format('=')}"
SAMPLE_PLAIN = f"""
SELECT (SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()),
       (SELECT count(*) FROM fleet.hourly_dirty),
       (SELECT n_tup_ins + n_tup_upd FROM pg_stat_user_tables
        WHERE relid = 'fleet.hourly_dirty'::regclass),
       {FRONTIERS_BEHIND}
"""
SAMPLE_TIMESCALE = f"""
SELECT (SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()),
       (SELECT count(*) FROM fleet.hourly_dirty),
       (SELECT n_tup_ins + n_tup_upd FROM pg_stat_user_tables
        WHERE relid = 'fleet.hourly_dirty'::regclass),
       (SELECT count(*) FROM _timescaledb_catalog.continuous_aggs_hypertable_invalidation_log)
     + (SELECT count(*) FROM _timescaledb_catalog.continuous_aggs_materialization_invalidation_log),
       (SELECT min(_timescaledb_functions.cagg_watermark(mat_hypertable_id))
        FROM _timescaledb_catalog.continuous_agg),
       (SELECT max(last_run_duration) FROM timescaledb_information.job_stats s
        JOIN timescaledb_information.jobs j USING (job_id)
        WHERE j.proc_name = 'policy_refresh_continuous_aggregate'),
       {FRONTIERS_BEHIND}
"""
_GAUGES = {
    "fleet_ingest_admission_slots_in_use": "slots_in_use",
    "fleet_ingest_admission_waiting": "waiting",
    "fleet_ingest_admission_capacity_per_second": "capacity_per_s",
    "fleet_ingest_admission_booked_ahead_seconds": "booked_ahead_s",
    "fleet_ingest_db_pool_waiting_requests": "pool_waiting",
}
_LAG_OVER = {"0.1": "lag_over_100ms", "0.25": "lag_over_250ms"}
_NO_WATERMARK = -(10**16)  # below (the year ~1653): -infinity, nothing materialized yet


def admission(text: str) -> dict[str, Any]:
    """ingestd's admission, refusals and event-loop lag from its /metrics page (see the module
    docstring); counters are totals since ingestd started."""
    out: dict[str, Any] = {}
    lag_total = 0.0
    under: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in _GAUGES:
                out[_GAUGES[sample.name]] = sample.value
            elif sample.name == "fleet_ingest_admission_refusals_total":
                out[f"refused_{sample.labels['reason']}"] = int(sample.value)
            elif sample.name == "fleet_ingest_event_loop_lag_seconds_count":
                lag_total = sample.value
            elif sample.name == "fleet_ingest_event_loop_lag_seconds_bucket":
                under[sample.labels["le"]] = sample.value
    for le, key in _LAG_OVER.items():
        if le in under:
            out[key] = int(lag_total - under[le])
    return out


def process_tree(pid: int) -> list[int]:
    """`pid` and its children (INGESTD_WORKERS forks its workers)."""
    pids = [pid]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                stat = (entry / "stat").read_text()
                if int(stat[stat.rindex(")") + 2 :].split()[1]) == pid:
                    pids.append(int(entry.name))
    return pids


def tree_cpu_and_rss(pid: int) -> tuple[float, int]:
    cpu, rss = 0.0, 0
    for p in process_tree(pid):
        with contextlib.suppress(OSError, ValueError, IndexError):
            cpu += cpu_seconds(p)
            rss += rss_bytes(p)
    return cpu, rss


class Sampler:
    """Every `every_s`: ingestd CPU and RSS, PostgreSQL CPU, the generator's CPU and loop lag,
    connections to the central database and the rollup backlog (the database ones skipped while
    it is down)."""

    def __init__(
        self,
        cluster: PgCluster,
        dsn: str,
        database: str,
        pid: int,
        fleet: Fleet,
        timescale: bool,
        metrics_url: str | None = None,
    ) -> None:
        self.cluster, self.dsn, self.database, self.pid = cluster, dsn, database, pid
        self.fleet, self.timescale = fleet, timescale
        self.metrics_url = metrics_url
        self.samples: list[dict[str, Any]] = []

    async def _metrics(self, client: aiohttp.ClientSession) -> dict[str, Any]:
        if self.metrics_url is None:
            return {}
        try:
            async with client.get(self.metrics_url) as r:
                return admission(await r.text()) if r.status == 200 else {}
        except (aiohttp.ClientError, TimeoutError, OSError):
            return {}

    def _cpu(self) -> dict[str, float]:
        pg = float("nan")
        with contextlib.suppress(OSError, ValueError, IndexError):
            pg = postgres_cpu_seconds(self.cluster)
        cpu, rss = tree_cpu_and_rss(self.pid)
        return {
            "t": time.monotonic(),
            "ingestd_cpu_s": cpu,
            "ingestd_rss": rss,
            "pg_cpu_s": pg,
            "client_cpu_s": time.process_time(),
        }

    async def _database(self, conn: psycopg.AsyncConnection[Any]) -> dict[str, Any]:
        query = SAMPLE_TIMESCALE if self.timescale else SAMPLE_PLAIN
        cur = await conn.execute(query, (self.database,))
        row = await cur.fetchone()
        if row is None:
            return {}
        out: dict[str, Any] = {
            "connections": int(row[0]),
            "dirty": int(row[1]),
            "dirty_writes": int(row[2]),
            "frontiers_behind": int(row[-2]),
            "frontiers_new": int(row[-1]),
        }
        if self.timescale:
            watermark = row[4]
            behind = None
            if watermark is not None and watermark > _NO_WATERMARK:
                behind = time.time() - watermark / 1e6  # internal time: µs since 1970
            out.update(
                invalidations=int(row[3]),
                watermark_behind_s=behind,
                refresh_run_s=row[5].total_seconds() if row[5] is not None else None,
            )
        return out

    async def run(self, stop: asyncio.Event, every_s: float = 2.0) -> None:
        timeout = aiohttp.ClientTimeout(total=max(1.0, every_s))
        async with aiohttp.ClientSession(timeout=timeout) as client:
            await self._run(stop, every_s, client)

    async def _run(
        self, stop: asyncio.Event, every_s: float, client: aiohttp.ClientSession
    ) -> None:
        conn: psycopg.AsyncConnection[Any] | None = None
        expected = time.monotonic()
        while not stop.is_set():
            # How late this loop wakes: a starved generator inflates every latency it measures.
            sample: dict[str, Any] = {
                "phase": self.fleet.phase,
                "loop_lag_s": max(0.0, time.monotonic() - expected),
                **self._cpu(),
                **await self._metrics(client),
            }
            try:
                if conn is None or conn.closed:
                    conn = await psycopg.AsyncConnection.connect(
                        self.dsn, autocommit=True, connect_timeout=2
                    )
                sample.update(await self._database(conn))
            except psycopg.Error:
                if conn is not None:
                    with contextlib.suppress(psycopg.Error):
                        await conn.close()
                conn = None
            self.samples.append(sample)
            expected = time.monotonic() + every_s
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every_s)
        if conn is not None:
            await conn.close()


def slope_per_min(points: list[tuple[float, float]]) -> float | None:
    """The least-squares slope of (seconds, value) points, per minute; None under 3 points."""
    if len(points) < 3:
        return None
    ts, vs = [p[0] for p in points], [p[1] for p in points]
    t_mean, v_mean = statistics.fmean(ts), statistics.fmean(vs)
    spread = sum((t - t_mean) ** 2 for t in ts)
    if spread == 0:
        return None
    return 60 * sum((t - t_mean) * (v - v_mean) for t, v in zip(ts, vs, strict=True)) / spread


def window(samples: list[dict[str, Any]], t0: float, t1: float) -> dict[str, Any]:
    """Shares of a core, RSS, connections and the backlog over the samples in [t0, t1]."""
    inside = [s for s in samples if t0 <= s["t"] <= t1]
    if len(inside) < 2:
        return {}
    a, b = inside[0], inside[-1]
    span = b["t"] - a["t"]
    conns = [s["connections"] for s in inside if "connections" in s]
    dirty = [(s["t"], s["dirty"]) for s in inside if "dirty" in s]
    writes = [(s["t"], s["dirty_writes"]) for s in inside if "dirty_writes" in s]
    frontiers = [s["frontiers_behind"] for s in inside if "frontiers_behind" in s]
    new = [s["frontiers_new"] for s in inside if "frontiers_new" in s]
    out: dict[str, Any] = {
        "span_s": span,
        "ingestd_cpu_s": b["ingestd_cpu_s"] - a["ingestd_cpu_s"],
        "ingestd_cpu_share": (b["ingestd_cpu_s"] - a["ingestd_cpu_s"]) / span,
        "pg_cpu_share": (b["pg_cpu_s"] - a["pg_cpu_s"]) / span,
        "client_cpu_share": (b["client_cpu_s"] - a["client_cpu_s"]) / span,
        "ingestd_rss_max_mib": max(s["ingestd_rss"] for s in inside) / 2**20,
        "connections_max": max(conns, default=None),
        "connections_median": statistics.median(conns) if conns else None,
        "dirty_first": dirty[0][1] if dirty else None,
        "dirty_last": dirty[-1][1] if dirty else None,
        "dirty_max": max((d for _, d in dirty), default=None),
        "dirty_slope_per_min": slope_per_min(dirty),
        "dirty_writes_per_s": (writes[-1][1] - writes[0][1]) / (writes[-1][0] - writes[0][0])
        if len(writes) > 1 and writes[-1][0] > writes[0][0]
        else None,
        "generator_loop_lag_max_s": max(s.get("loop_lag_s", 0.0) for s in inside),
        "frontiers_behind_max": max(frontiers, default=None),
        "frontiers_behind_last": frontiers[-1] if frontiers else None,
        "frontiers_new_max": max(new, default=None),
        "frontiers_new_last": new[-1] if new else None,
    }
    invalidations = [(s["t"], s["invalidations"]) for s in inside if "invalidations" in s]
    if invalidations:
        behind = [s["watermark_behind_s"] for s in inside if s.get("watermark_behind_s")]
        runs = [s["refresh_run_s"] for s in inside if s.get("refresh_run_s") is not None]
        out.update(
            invalidations_first=invalidations[0][1],
            invalidations_last=invalidations[-1][1],
            invalidations_slope_per_min=slope_per_min(invalidations),
            watermark_behind_max_s=max(behind, default=None),
            refresh_run_max_s=max(runs, default=None),
        )
    return out
