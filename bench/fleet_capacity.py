"""What one ingestd process carries (`bench/fleet.py --capacity`): the largest fleet with p99 under
100 ms and no 503, ingestd's CPU per batch by encoding, the rollup's backlog slope, and what the
generator itself cost — on one storage path (plain PostgreSQL or TimescaleDB).

The search steps the fleet up from `--search-start` gateways by `--search-factor` to
`--gateways`: each step starts the first N registered gateways afresh (their first tick sends
their full sets: the warm-up, counted apart), then measures `--step-duration` s. A step passes
when every batch type's p99 is under 100 ms and nothing but 200 was answered; the search stops at
the first step that fails, at `--gateways`, or when the next step would end past
`--search-budget` s. Then, at the largest size that passed (the first step's when none did),
the fleet runs `--encoding-duration` s sending gzip JSON measurements and as long again sending
columnar ones (switched in place, one interval apart): ingestd's CPU from /proc (its process
tree) divided by the requests answered in each window. The encodings run at
`--encoding-gateways` (default: the largest size that passed, else 1,000), after the warm-up and
one more interval for the warm-up's retried full sets to drain: CPU per batch is the cost of a
small measurement batch only when nearly every request in the window is one, answered 200 — a
window with 503s or full sets is marked not clean (an overloaded window's CPU goes to refusals
and retries too: last session's 10,000-gateway run divided the CPU of 57,659 refusals by 11,653
answers, 4.14 ms "per batch" for JSON and 7.73 columnar while the generator lagged 7 s).

Before the search ingestd runs alone for `--idle-s` s: its background loops' share of a core
(housekeeping, fleet states, readiness) on an empty database; after the encodings once more,
with the fleet's gateways and rows (the fleet-state rounds then classify them). CPU per batch
is all of ingestd's CPU over the window divided by the requests answered (the figure the
targets are taken from); beside it, the idle rate after the fleet and CPU per batch net of it. The backlog's slope is taken over the encodings' run (one
fleet past its warm-up: new gateways' first hours are not a backlog).

The generator shares the machine with what it measures: each step reports its CPU share, its
CPU per request and its loop lag; a step whose loop woke more than 0.1 s late is marked
generator-bound (its latencies are the generator's, not ingestd's). `--pin GEN:SERVICE` (e.g.
`0:1` on two cores) keeps them apart: the generator's threads on the CPUs before the colon,
ingestd's and PostgreSQL's processes and threads (and the backends the postmaster forks later)
on those after it (`os.sched_setaffinity`), so the generator cannot take the measured cores'
time unnoticed — at the price of giving ingestd and PostgreSQL only the service CPUs.
"""

from __future__ import annotations

import asyncio
import math
import os
import random
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bodies import ValuePool
from common import IngestdProcess
from cpu_pinning import parse_pin, pin_tree
from fleet_figures import CLEAN_SHARE, GENERATOR_LAG_S, TARGET_P99_MS
from fleet_minutes import clean_cpu, minute_lines, per_minute, refusals
from fleet_probe import Sampler, process_tree, window
from fleetcore.protocol import INGEST_PATH
from fleetdev.pgcluster import PgCluster
from simulator import (
    TYPES,
    Fleet,
    build_gateways,
    latency,
    register_gateways,
    session,
)

__all__ = ["capacity"]

DATABASE = "fleet_central"
ENCODING_GATEWAYS = 1000  # when no step passed


@dataclass
class Run:
    """One fleet of gateways pushing while named windows are measured."""

    ingestd: IngestdProcess
    sampler: Sampler
    pool: ValuePool
    args: Any
    idle_share: float = 0.0
    pinned: str | None = None  # "generator CPUs 0, ingestd + PostgreSQL 1"

    async def drive(
        self, tokens: Sequence[str], plan: Sequence[tuple[str, float, bool | None]]
    ) -> tuple[Fleet, dict[str, tuple[float, float]], int]:
        """Run the gateways of `tokens` through `plan`: (phase, seconds, columnar or None to
        leave the encoding) each; returns the fleet (its records), each phase's window and the
        gateways' meters."""
        args = self.args
        fleet = Fleet(self.ingestd.base_url + INGEST_PATH, self.pool, args.interval, "first-tick")
        self.sampler.fleet = fleet
        gateways = build_gateways(
            tokens, args.interval, (args.meters_min, args.meters_max), random.Random(args.seed)
        )
        windows: dict[str, tuple[float, float]] = {}
        start = time.monotonic()
        end = start + sum(seconds for _, seconds, _ in plan) + 5
        async with session(args.connections) as client:
            tasks = [asyncio.create_task(g.run(client, fleet, start, end)) for g in gateways]
            try:
                for phase, seconds, columnar in plan:
                    if columnar is not None:
                        self.pool.columnar = columnar
                    fleet.phase = phase
                    t0 = time.monotonic()
                    if phase == "settle":
                        await _settled(fleet, seconds, quiet_s=max(2.0, args.interval / 4))
                    else:
                        await asyncio.sleep(seconds)
                    windows[phase] = (t0, time.monotonic())
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
        return fleet, windows, sum(g.meters for g in gateways)

    def measured(self, fleet: Fleet, phase: str, t0: float, t1: float) -> dict[str, Any]:
        """Latency and statuses of the batches sent in [t0, t1], ingestd's CPU per answered batch
        (its share of a core over the window; net: less its share when idle)."""
        records = [r for r in fleet.records if r.phase == phase and t0 <= r.sent_at < t1]
        per_type = {t: latency([r for r in records if r.batch_type == t]) for t in TYPES}
        probe = window(self.sampler.samples, t0, t1)
        ok = sum(1 for r in records if r.status == "200")
        answered = sum(1 for r in records if r.status.isdigit())
        small = sum(1 for r in records if r.status == "200" and r.batch_type == "measurements")
        rows = [r.rows for r in records if r.batch_type == "measurements"]
        share = probe.get("ingestd_cpu_share")
        client = probe.get("client_cpu_share")
        per_batch = net = per_ok = generator = None
        if share is not None and answered:
            # Per request answered, whatever the answer: a 503 costs CPU too.
            per_batch = 1000 * share * (t1 - t0) / answered
            net = 1000 * max(0.0, share - self.idle_share) * (t1 - t0) / answered
            per_ok = 1000 * share * (t1 - t0) / ok if ok else None
        if client is not None and records:
            generator = 1000 * client * (t1 - t0) / len(records)
        return {
            "window_s": t1 - t0,
            "per_type": per_type,
            "all": latency(records),
            "requests_per_s": len(records) / (t1 - t0),
            "rows_per_batch": statistics.fmean(rows) if rows else None,
            "ingestd_cpu_ms_per_batch": per_batch,
            "ingestd_cpu_ms_per_batch_net_of_idle": net,
            "ingestd_cpu_ms_per_200": per_ok,
            "answered": answered,
            "small_batches_ok": small,
            "clean": bool(records) and small >= CLEAN_SHARE * len(records),
            "generator_cpu_ms_per_request": generator,
            "pinned": self.pinned,
            **probe,
        }


async def _settled(fleet: Fleet, most_s: float, quiet_s: float) -> None:
    """Until no full set (sites, devices) has been sent for `quiet_s` s — the warm-up's refused
    full sets come back after their Retry-After — or `most_s` s (the encodings' end is moved
    accordingly: the gateways run until cancelled)."""
    started = time.monotonic()
    while time.monotonic() - started < most_s:
        await asyncio.sleep(1.0)
        last = max(
            (r.sent_at + r.latency_s for r in fleet.records if r.batch_type != "measurements"),
            default=0.0,
        )
        if time.monotonic() - last >= quiet_s:
            return


def _p99(step: dict[str, Any]) -> float | None:
    """The worst p99 over the batch types that were measured (None: too few answers)."""
    found = [st["p99_ms"] for st in step["per_type"].values() if "p99_ms" in st]
    return max(found) if found else None


def _passed(step: dict[str, Any]) -> bool:
    p99 = _p99(step)
    statuses = step["all"]["statuses"]
    return p99 is not None and p99 < TARGET_P99_MS and set(statuses) <= {"200"}


async def capacity(args: Any, cluster: PgCluster, dsn: str, timescale: bool) -> dict[str, Any]:
    """The search, then CPU per batch by encoding, on the database at `dsn`."""
    tokens = register_gateways(dsn, args.gateways)
    env = {"INGESTD_TIMESCALEDB": "on" if timescale else "off"}
    env.update(dict(kv.split("=", 1) for kv in args.ingestd_env))
    pool = ValuePool(reject_every=args.reject_every)
    result: dict[str, Any] = {"storage": "timescaledb" if timescale else "postgresql", "env": env}
    started = time.monotonic()
    with IngestdProcess(dsn, extra_env=env) as ingestd:
        probe_fleet = Fleet("", pool, args.interval)
        sampler = Sampler(
            cluster,
            dsn,
            DATABASE,
            ingestd.pid,
            probe_fleet,
            timescale,
            metrics_url=ingestd.base_url + "/metrics",
        )
        stop = asyncio.Event()
        sampling = asyncio.create_task(sampler.run(stop, every_s=args.sample_s))
        run = Run(ingestd, sampler, pool, args)
        if args.pin:
            generator, service = parse_pin(args.pin)
            postmaster = int((cluster.datadir / "postmaster.pid").read_text().split()[0])
            pin_tree(process_tree(ingestd.pid) + process_tree(postmaster), service)
            pin_tree([os.getpid()], generator)
            run.pinned = f"generator on CPUs {sorted(generator)}, ingestd + PostgreSQL on " + str(
                sorted(service)
            )
            result["pinned"] = run.pinned
            print(f"  pinned: {run.pinned}", file=sys.stderr)
        try:
            t0 = time.monotonic()  # ingestd alone: its background loops' share of a core
            await asyncio.sleep(args.idle_s)
            result["idle"] = window(sampler.samples, t0, time.monotonic())
            run.idle_share = result["idle"].get("ingestd_cpu_share", 0.0)
            result["steps"] = steps = await _search(run, tokens, started)
            passing = [s["gateways"] for s in steps if s["passed"]]
            result["largest_passing"] = max(passing, default=None)
            size = args.encoding_gateways or result["largest_passing"] or ENCODING_GATEWAYS
            if args.encoding_duration > 0:
                result["encodings"] = await _encodings(run, tokens[: min(size, len(tokens))])
                t0 = time.monotonic()  # alone again, with the fleet's gateways and rows
                await asyncio.sleep(args.idle_s)
                result["idle_after"] = window(sampler.samples, t0, time.monotonic())
        finally:
            stop.set()
            await sampling
        result["whole_run"] = window(sampler.samples, started, time.monotonic())
    result["runtime_s"] = time.monotonic() - started
    return result


async def _search(run: Run, tokens: Sequence[str], started: float) -> list[dict[str, Any]]:
    args = run.args
    steps: list[dict[str, Any]] = []
    size = min(args.search_start, args.gateways)
    step_s = args.warmup + args.step_duration
    columnar = args.step_encoding == "columnar"
    if columnar:
        run.pool.prepare_columnar(range(args.meters_min, args.meters_max + 1))
    while True:
        print(f"  step: {size} gateways", file=sys.stderr)
        fleet, windows, meters = await run.drive(
            tokens[:size], [("warmup", args.warmup, columnar), ("steady", args.step_duration, None)]
        )
        step = run.measured(fleet, "steady", *windows["steady"])
        warm = [r for r in fleet.records if r.phase == "warmup"]
        step.update(
            gateways=size,
            encoding=args.step_encoding,
            meters=meters,
            warmup=latency(warm),
            **refusals(fleet.records, windows["warmup"][0]),
            minutes=per_minute(
                fleet.records, run.sampler.samples, windows["warmup"][0], windows["steady"][1]
            ),
            p99_ms=_p99(step),
            passed=_passed(step),
            generator_bound=step.get("generator_loop_lag_max_s", 0.0) > GENERATOR_LAG_S,
        )
        step.update(clean_cpu(step["minutes"]))
        steps.append(step)
        print("\n".join(minute_lines(step["minutes"])), file=sys.stderr)
        print(
            f"    p99 {step['p99_ms'] or float('nan'):.0f} ms, statuses {step['all']['statuses']}"
            f", {'passed' if step['passed'] else 'failed'}",
            file=sys.stderr,
        )
        if not step["passed"] or size >= args.gateways:
            break
        if time.monotonic() + step_s > started + args.search_budget:
            steps[-1]["budget_ended_search"] = True
            break
        size = min(args.gateways, max(size + 1, math.ceil(size * args.search_factor)))
    return steps


async def _encodings(run: Run, tokens: Sequence[str]) -> dict[str, Any]:
    """gzip JSON, then columnar measurements at one fleet size: ingestd CPU per batch each."""
    args = run.args
    print(f"  encodings: {len(tokens)} gateways", file=sys.stderr)
    run.pool.prepare_columnar(range(args.meters_min, args.meters_max + 1))
    plan = [
        ("warmup", args.warmup, False),
        ("settle", 3 * args.interval, None),  # the warm-up's retried full sets drain
        ("json", args.encoding_duration, None),
        ("switch", args.interval, True),
        ("columnar", args.encoding_duration, None),
    ]
    fleet, windows, _ = await run.drive(tokens, plan)
    out: dict[str, Any] = {"gateways": len(tokens)}
    # One fleet throughout, past its warm-up: the backlog's slope is the rollup's, not new
    # gateways' first hours.
    out["backlog"] = window(run.sampler.samples, windows["json"][0], windows["columnar"][1])
    for encoding in ("json", "columnar"):
        out[encoding] = run.measured(fleet, encoding, *windows[encoding])
        sent = {r.encoding for r in fleet.records if r.phase == encoding}
        out[encoding]["encodings_sent"] = sorted(sent)
    run.pool.columnar = False
    return out
