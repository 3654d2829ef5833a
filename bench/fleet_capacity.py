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

from common import IngestdProcess
from cpu_pinning import parse_pin, pin_tree
from fleet_minutes import clean_cpu, minute_lines, per_minute, refusals
from fleet_probe import Sampler, process_tree, window
from fleetcore.protocol import INGEST_PATH
from fleetdev.pgcluster import PgCluster
from report import Figure, Target, errors
from simulator import (
    TYPES,
    Fleet,
    ValuePool,
    build_gateways,
    latency,
    register_gateways,
    session,
)

__all__ = ["capacity", "capacity_figures"]

TARGET_P99_MS = 100.0
TARGET_GATEWAYS = Target(">=", 10_000, " gateways", also="p99 < 100 ms, no 503")
TARGET_CPU = {
    "json": Target("<=", 2.0, " ms", of="CPU per batch"),
    "columnar": Target("<=", 1.5, " ms", of="CPU per batch"),
}
GENERATOR_LAG_S = 0.1
DATABASE = "fleet_central"
CLEAN_SHARE = 0.99  # of a window's requests: measurement batches answered 200
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


def _step_text(step: dict[str, Any]) -> str:
    p99 = step["p99_ms"]
    verdict = "ok" if step["passed"] else "FAIL"
    mark = " generator-bound" if step["generator_bound"] else ""
    warm = step["warmup"]["statuses"]
    behind = step.get("watermark_behind_max_s")
    cagg = "" if behind is None else f", cagg watermark behind max {behind / 60:.0f} min"
    due = step.get("frontiers_behind_max")
    if due is not None:
        cagg += (
            f", stored-energy steps due max {due:,} (at the end {step['frontiers_behind_last']:,})"
        )
    per_minute = ", ".join(
        f"{m['full_sets']:,}+{m['measurements']:,}" for m in step.get("refused_per_minute", [])
    )
    last = step.get("last_503_s")
    return (
        f"{step['gateways']:,} {verdict} (p99 {'-' if p99 is None else f'{p99:.0f}'} ms, "
        f"errors {errors(step['all']['statuses'])}; warm-up minute: errors {errors(warm)} of "
        f"{sum(warm.values()):,}; 503s per minute from the start (full sets+measurements) "
        f"{per_minute or '-'}, the last {'none' if last is None else f'at {last:.0f} s'} "
        f"({', '.join(f'{k}: {n:,}' for k, n in step.get('refused_by_detail', {}).items())}); "
        f"hourly_dirty {step.get('dirty_first')} -> {step.get('dirty_last')}{cagg}{mark})"
    )


def capacity_figures(result: dict[str, Any]) -> list[Figure]:
    """The four answers of issue 26 items 3-4 for one storage path."""
    path = result["storage"]
    if "skipped" in result:
        return [Figure(f"fleet capacity ({path})", "-", result["skipped"], "", "SKIPPED")]
    steps, largest = result["steps"], result["largest_passing"]
    out = [
        Figure.checked(
            f"fleet capacity ({path}): largest fleet, one ingestd",
            largest,
            "none passed" if largest is None else f"{largest:,} gateways",
            TARGET_GATEWAYS,
            "; ".join(_step_text(s) for s in steps)
            + ("; search budget ended it" if steps[-1].get("budget_ended_search") else ""),
        )
    ]
    out.extend(_step_cpu_figure(path, steps[-1]))
    enc = result.get("encodings")
    if enc is not None:  # not with --encoding-duration 0: the search only
        out.extend(_encoding_figures(path, enc, result.get("idle_after", {})))
    whole = result["whole_run"]
    lags = [s.get("generator_loop_lag_max_s", 0.0) for s in steps]
    shares = [s.get("client_cpu_share", 0.0) for s in steps]
    out.append(
        Figure.of(
            f"fleet ({path}): what the generator cost",
            f"{100 * max(shares, default=0):.0f}% of a core (most, at a step)",
            f"loop lag max {max(lags, default=0):.2f} s (above {GENERATOR_LAG_S:g} s a step is "
            f"generator-bound); ingestd {100 * whole.get('ingestd_cpu_share', 0):.0f}% (idle "
            f"{100 * result['idle'].get('ingestd_cpu_share', 0):.1f}% empty, "
            f"{100 * result.get('idle_after', {}).get('ingestd_cpu_share', 0):.1f}% after the "
            "fleet), "
            f"PostgreSQL {100 * whole.get('pg_cpu_share', 0):.0f}% over the run",
        )
    )
    return out


def _step_cpu_figure(path: str, step: dict[str, Any]) -> list[Figure]:
    """CPU per batch at the last step's own rate (its encoding, `--step-encoding`), over its
    clean minutes: the fleet's real cadence, where the encodings' windows run a smaller fleet."""
    cpu = step.get("clean_cpu_ms_per_batch")
    if cpu is None:
        return []
    encoding = step.get("encoding", "json")
    return [
        Figure.checked(
            f"fleet ({path}, {step['gateways']:,} gw step): ingestd CPU per batch, {encoding}",
            cpu,
            f"{cpu:.2f} ms",
            TARGET_CPU[encoding],
            f"over the step's clean minutes {step['clean_minutes']} (0: the warm-up; a minute is "
            f"clean when {CLEAN_SHARE:.0%} of its answers are measurement batches answered 200): "
            f"all of ingestd's CPU over them / their {step['clean_answers']:,} answers",
        )
    ]


def _encoding_figures(path: str, enc: dict[str, Any], idle: dict[str, Any]) -> list[Figure]:
    """CPU per batch by encoding (all of ingestd's CPU per request answered; beside it the idle
    rate after the fleet, `idle`, and the figure net of it) and the backlog's slope."""
    out: list[Figure] = []
    idle_share = idle.get("ingestd_cpu_share")
    for encoding in ("json", "columnar"):
        st = enc[encoding]
        cpu = st.get("ingestd_cpu_ms_per_batch")
        net = None
        if cpu is not None and idle_share is not None and st["requests_per_s"]:
            net = max(0.0, cpu - 1000 * idle_share / st["requests_per_s"])
        idle_text = (
            "-"
            if idle_share is None
            else f"{1000 * idle_share:.1f} ms/s = {1000 * idle_share / st['requests_per_s']:.2f} "
            f"ms per batch at this rate"
        )
        gen = st.get("generator_cpu_ms_per_request")
        figure = Figure.checked(
            f"fleet ({path}, {enc['gateways']:,} gw): ingestd CPU per batch, {encoding}",
            cpu,
            "-" if cpu is None else f"{cpu:.2f} ms",
            TARGET_CPU[encoding],
            f"all of ingestd's CPU / requests answered; its idle rate after the fleet "
            f"{idle_text}, net of it {'-' if net is None else f'{net:.2f}'} ms; "
            f"{st['requests_per_s']:.1f} requests/s; of {st['all']['requests']:,} requests "
            f"{st.get('small_batches_ok', 0):,} measurement batches answered 200 (of "
            f"{st['rows_per_batch'] or 0:.0f} rows); ingestd "
            f"{100 * st.get('ingestd_cpu_share', 0):.0f}% of a core, PostgreSQL "
            f"{100 * st.get('pg_cpu_share', 0):.0f}%; errors {errors(st['all']['statuses'])}; "
            f"generator {'-' if gen is None else f'{gen:.2f}'} ms per request, loop lag max "
            f"{st.get('generator_loop_lag_max_s', 0):.2f} s"
            + (f"; {st['pinned']}" if st.get("pinned") else ""),
        )
        if not st.get("clean", True):
            figure = Figure(
                figure.figure,
                figure.measured,
                figure.spread,
                figure.target,
                "NOT CLEAN (503s or full sets in the window: not a small batch's cost)",
            )
        out.append(figure)
    backlog = enc["backlog"]
    if path == "timescaledb":
        slope = backlog.get("invalidations_slope_per_min")
        behind = backlog.get("watermark_behind_max_s")
        run_s = backlog.get("refresh_run_max_s")
        out.append(
            Figure.of(
                f"fleet ({path}): cagg backlog slope",
                "-" if slope is None else f"{slope:+.1f} invalidations/min",
                f"invalidation rows {backlog.get('invalidations_first')} -> "
                f"{backlog.get('invalidations_last')}; watermark behind max "
                f"{'-' if behind is None else f'{behind / 60:.0f} min'}; refresh job run max "
                f"{'-' if run_s is None else f'{run_s:.1f} s'}; back-fill marks "
                f"{backlog.get('dirty_first')} -> {backlog.get('dirty_last')}",
                "flat",
            )
        )
    else:
        slope = backlog.get("dirty_slope_per_min")
        out.append(
            Figure.of(
                f"fleet ({path}): rollup backlog slope (fleet.hourly_dirty)",
                "-" if slope is None else f"{slope:+.1f} marks/min",
                f"marks {backlog.get('dirty_first')} -> {backlog.get('dirty_last')} (max "
                f"{backlog.get('dirty_max')}); {backlog.get('dirty_writes_per_s') or 0:,.0f} "
                f"mark writes/s; over {backlog.get('span_s', 0):.0f} s at "
                f"{enc['gateways']:,} gateways",
                "flat",
            )
        )
    return out
