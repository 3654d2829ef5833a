"""Many gateways: N small pushers at one ingestd, steady, then through a central outage.

    uv run python bench/gateways.py [--gateways 200] [--duration 30] [--outage 20]

One throwaway PostgreSQL cluster with the central database, N customers each with its own
token (registered in bulk with SQL and `fleetcore.hash_token`), one `ingestd serve` subprocess.
Each simulated gateway is one asyncio task with its own aiohttp session; every second (from a
random phase) it produces a batch of 100 rows into its local queue and sends the head of the
queue, one request in flight, as the pusher does: a backlog goes out in requests of up to
`--replay-rows` rows (the pusher's PUSHER_BATCH_SIZE, 5,000); 429/503 are retried after
Retry-After plus jitter and other failures after a full-jitter exponential backoff, with the
pusher's own retry policy (the gateways are `simulator.Gateway`s, as in fleet.py).

  baseline  one extra gateway alone for --baseline-duration s: the unloaded latency
  steady    the N gateways for --duration s (the first --warmup s not counted): requests/s,
            latency p50/p95/p99 (p99 per 10 s window as the spread), errors by status, ingestd
            CPU per request
  outage    PostgreSQL stopped (`pg_ctl -m immediate`, a crash) for --outage s while the
            gateways keep producing and trying; their queues grow
  recovery  PostgreSQL restarted; time until every gateway's queue has been emptied, 429/503
            answers, and the peak of connections to the central database (pg_stat_activity,
            polled every 100 ms from the `postgres` database)

ingestd runs with its defaults unless `--ingestd-env NAME=VALUE` says otherwise (pool size,
rate limits, Retry-After). Every loop is bounded by a deadline; Ctrl-C and SIGTERM stop the
gateways, ingestd and the cluster. Results go to bench/results/gateways-<time>.json (or --json).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
from bodies import PreEncoded
from common import (
    IngestdProcess,
    cpu_seconds,
    create_central_database,
    exit_on_sigterm,
    machine_info,
    peak_rss_bytes,
)
from fleetcore.protocol import INGEST_PATH
from fleetdev.pgcluster import PgCluster, temporary_cluster
from report import Figure, Target, errors, finish
from simulator import Fleet, Gateway, latency, register_gateways

ROWS_PER_BATCH = 100
TARGET_P99 = Target("<", 250.0, " ms")
# Each gateway follows the pusher's retry rules with a short base and cap (a short outage).
BACKOFF_BASE_S, BACKOFF_CAP_S = 1.0, 30.0
COUNT_CONNECTIONS = "SELECT count(*) FROM pg_stat_activity WHERE datname = %s"


async def poll_connections(cluster: PgCluster, database: str, stop: asyncio.Event) -> list[int]:
    """Connections to `database` every 100 ms, reconnecting (bounded) through an outage."""
    counts: list[int] = []
    while not stop.is_set():
        try:
            async with await psycopg.AsyncConnection.connect(
                cluster.dsn("postgres"), autocommit=True, connect_timeout=2
            ) as conn:
                while not stop.is_set():
                    cur = await conn.execute(COUNT_CONNECTIONS, (database,))
                    row = await cur.fetchone()
                    counts.append(int(row[0]) if row else 0)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), 0.1)
        except psycopg.Error:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.3)
    return counts


async def run_alone(gateways: Sequence[Gateway], fleet: Fleet, duration_s: float) -> None:
    """Each gateway with its own client session (one connection), for `duration_s`."""

    async def one(gateway: Gateway, start: float) -> None:
        async with aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=60), connector=aiohttp.TCPConnector(limit=1)
        ) as session:
            await gateway.run(session, fleet, start, start + duration_s)

    start = time.monotonic()
    async with asyncio.TaskGroup() as group:
        for g in gateways:
            group.create_task(one(g, start))


def _fleet(url: str, bodies: PreEncoded, replay_rows: int) -> Fleet:
    """A tick a second of ROWS_PER_BATCH rows, measurements only, no full sets."""
    return Fleet(
        url,
        bodies,
        interval_s=1.0,
        batch_rows=replay_rows,
        backoff_base_s=BACKOFF_BASE_S,
        backoff_cap_s=BACKOFF_CAP_S,
        phase="steady",
    )


def _gateways(tokens: Sequence[str], first: int, seed: int) -> list[Gateway]:
    rng = random.Random(seed)
    return [
        Gateway(first + n, token, ROWS_PER_BATCH, rng.random()) for n, token in enumerate(tokens)
    ]


async def scenario(args: argparse.Namespace, cluster: PgCluster, dsn: str) -> dict[str, Any]:
    tokens = register_gateways(dsn, args.gateways + 1)
    total_s = args.baseline_duration + args.duration + args.outage + args.recovery_timeout
    bodies = PreEncoded(int(total_s) + 10, ROWS_PER_BATCH)
    env = {"INGESTD_RATE_LIMIT_PER_S": "50", "INGESTD_RATE_LIMIT_BURST": "100"}
    env.update(dict(kv.split("=", 1) for kv in args.ingestd_env))
    result: dict[str, Any] = {"ingestd_env": env}
    with IngestdProcess(dsn, extra_env=env) as ingestd:
        url = ingestd.base_url + INGEST_PATH

        base = _fleet(url, bodies, args.replay_rows)
        await run_alone(_gateways(tokens[-1:], args.gateways, 7), base, args.baseline_duration)
        result["baseline_1_gateway"] = latency(
            [r for r in base.records if r.sent_at - base.records[0].sent_at >= 2.0]
        )
        print(f"  baseline done: {_brief(result['baseline_1_gateway'])}", file=sys.stderr)

        run = _fleet(url, bodies, args.replay_rows)
        gateways = _gateways(tokens[: args.gateways], 0, 11)
        stop_polling = asyncio.Event()
        poller = asyncio.create_task(poll_connections(cluster, "fleet_central", stop_polling))
        lag: list[float] = []
        started = time.monotonic()
        steady_end = started + args.duration
        horizon = args.duration + args.outage + args.recovery_timeout
        gateways_task = asyncio.create_task(run_alone(gateways, run, horizon))
        monitor = asyncio.create_task(_loop_lag(lag, started + horizon))
        try:
            await asyncio.sleep(args.warmup)
            cpu0, client0, t0 = cpu_seconds(ingestd.pid), time.process_time(), time.monotonic()
            await asyncio.sleep(max(0.0, steady_end - time.monotonic()))
            cpu1, client1, t1 = cpu_seconds(ingestd.pid), time.process_time(), time.monotonic()
            steady = [r for r in run.records if t0 <= r.sent_at < t1 and r.phase == "steady"]
            result["steady"] = latency(steady)
            result["steady"]["requests_per_s"] = len(steady) / (t1 - t0)
            result["steady"]["window_s"] = t1 - t0
            result["steady"]["ingestd_cpu_ms_per_request"] = 1000 * (cpu1 - cpu0) / len(steady)
            result["steady"]["ingestd_cpu_share"] = (cpu1 - cpu0) / (t1 - t0)
            result["steady"]["client_cpu_share"] = (client1 - client0) / (t1 - t0)
            third = (t1 - t0) / 3
            result["steady"]["p99_ms_per_third"] = [
                latency([r for r in steady if w <= r.sent_at < w + third]).get("p99_ms")
                for w in (t0, t0 + third, t0 + 2 * third)
            ]
            steady_lag = sorted(lag)
            result["steady"]["client_loop_lag_p99_ms"] = (
                1000 * steady_lag[int(0.99 * (len(steady_lag) - 1))] if steady_lag else None
            )
            print(f"  steady done: {_brief(result['steady'])}", file=sys.stderr)

            run.phase = "outage"
            await asyncio.to_thread(cluster.stop, "immediate")
            await asyncio.sleep(args.outage)
            backlog_at_restart = run.backlog_rows(gateways)
            run.phase = "recovery"
            await asyncio.to_thread(cluster.start)
            run.restarted_at = time.monotonic()
            run.expect_caught_up(len(gateways))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(run.all_caught_up.wait(), args.recovery_timeout)
        finally:
            stop_polling.set()
            gateways_task.cancel()
            monitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await gateways_task
            with contextlib.suppress(asyncio.CancelledError):
                await monitor
            counts = await poller
        result.update(_recovery(run, gateways, backlog_at_restart))
        result["peak_db_connections"] = max(counts, default=None)
        result["ingestd_peak_rss_mib"] = peak_rss_bytes(ingestd.pid) / 2**20
    print(f"  recovery done: {result['recovery']}", file=sys.stderr)
    return result


def _recovery(run: Fleet, gateways: Sequence[Gateway], backlog: int) -> dict[str, Any]:
    assert run.restarted_at is not None
    caught_up = [t - run.restarted_at for t in run.caught_up_at.values()]
    recovery = [r for r in run.records if r.phase == "recovery"]
    first_ok = min((r.sent_at for r in recovery if r.status == "200"), default=None)
    everyone = len(caught_up) == len(gateways)
    return {
        "outage": latency([r for r in run.records if r.phase == "outage"]),
        "recovery": {
            **latency(recovery),
            "backlog_rows_at_restart": backlog,
            "gateways_caught_up": len(caught_up),
            "time_to_all_caught_up_s": max(caught_up) if everyone else None,
            "time_to_half_caught_up_s": statistics.median(caught_up) if caught_up else None,
            # Without the wait the 503s of the outage asked for (Retry-After + jitter):
            "drain_after_first_success_s": max(run.caught_up_at.values()) - first_ok
            if first_ok is not None and everyone
            else None,
            "answers_429": sum(r.status == "429" for r in recovery),
            "answers_503": sum(r.status == "503" for r in recovery),
        },
    }


def _brief(stats: dict[str, Any]) -> str:
    return ", ".join(f"{k} {stats[k]:.0f}" for k in ("requests", "p50_ms", "p99_ms") if k in stats)


async def _loop_lag(lag: list[float], end: float) -> None:
    """How late the client's event loop wakes: a saturated client inflates every latency."""
    while time.monotonic() < end:
        expected = time.monotonic() + 0.05
        await asyncio.sleep(0.05)
        lag.append(max(0.0, time.monotonic() - expected))


def report(result: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    base, steady, rec = result["baseline_1_gateway"], result["steady"], result["recovery"]
    print()
    print(f"{args.gateways} gateways x 1 batch of {ROWS_PER_BATCH} rows/s, one ingestd")
    header = f"{'phase':<28} {'req/s':>7} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8}  statuses"
    print(header)
    print("-" * len(header))
    for label, s, rate in (
        ("1 gateway alone (baseline)", base, None),
        (f"{args.gateways} gateways, steady", steady, steady["requests_per_s"]),
    ):
        print(
            f"{label:<28} {rate if rate is not None else 1.0:>7.1f} {s.get('p50_ms', 0):>8.1f} "
            f"{s.get('p95_ms', 0):>8.1f} {s.get('p99_ms', 0):>8.1f}  {s['statuses']}"
        )
    windows = [w for w in steady["p99_ms_per_third"] if w is not None]
    if windows:
        print(f"steady p99 in each third of the phase: {', '.join(f'{w:.0f}' for w in windows)} ms")
    print(
        f"ingestd CPU {steady['ingestd_cpu_ms_per_request']:.2f} ms per request "
        f"({100 * steady['ingestd_cpu_share']:.0f}% of a core), client "
        f"{100 * steady['client_cpu_share']:.0f}% of a core, client loop lag p99 "
        f"{steady['client_loop_lag_p99_ms'] or 0:.0f} ms"
    )
    print(
        f"outage {args.outage:g} s: backlog {rec['backlog_rows_at_restart']:,} rows; recovery: "
        f"all caught up in {rec['time_to_all_caught_up_s'] or float('nan'):.1f} s "
        f"({rec['gateways_caught_up']}/{args.gateways}; drained "
        f"{rec['drain_after_first_success_s'] or float('nan'):.1f} s after the first success), "
        f"429: {rec['answers_429']}, "
        f"503: {rec['answers_503']}, statuses {rec['statuses']}, peak DB connections "
        f"{result['peak_db_connections']}"
    )
    return result


def figures(result: dict[str, Any]) -> list[Figure]:
    s, rec, base = result["steady"], result["recovery"], result["baseline_1_gateway"]
    n = result["config"]["gateways"]
    thirds = ", ".join(f"{w:.0f}" for w in s["p99_ms_per_third"] if w is not None)
    caught = rec["time_to_all_caught_up_s"]
    drain = rec["drain_after_first_success_s"]
    return [
        Figure.of(f"4. {n} gateways: requests/s", f"{s['requests_per_s']:.0f}", "", f"{n}"),
        Figure.of(
            f"4. {n} gateways: p50 / p95 latency",
            f"{s.get('p50_ms', 0):.0f} / {s.get('p95_ms', 0):.0f} ms",
            f"1 gateway alone: {base.get('p50_ms', 0):.0f} / {base.get('p95_ms', 0):.0f} ms",
        ),
        Figure.checked(
            f"4. {n} gateways: p99 latency",
            s.get("p99_ms"),
            f"{s.get('p99_ms', float('nan')):.0f} ms",
            TARGET_P99,
            f"thirds {thirds} ms; errors {errors(s['statuses'])}",
            also=not set(s["statuses"]) - {"200"},
        ),
        Figure.of(
            f"4. recovery: all {n} caught up after restart",
            "never" if caught is None else f"{caught:.1f} s",
            f"backlog {rec['backlog_rows_at_restart']:,} rows; drain "
            f"{drain or float('nan'):.1f} s after first 200",
        ),
        Figure.of(
            "4. recovery: 429 / 503 answers",
            f"{rec['answers_429']} / {rec['answers_503']}",
            f"outage: {errors(result['outage']['statuses'])}",
        ),
        Figure.of(
            "4. ingestd peak RSS (recovery included)", f"{result['ingestd_peak_rss_mib']:.0f} MiB"
        ),
        Figure.of(
            "4. peak central DB connections",
            f"{result['peak_db_connections']}",
            f"pool max {result['ingestd_env'].get('INGESTD_POOL_MAX_SIZE', '4 (default)')}",
        ),
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--gateways", type=int, default=200)
    parser.add_argument("--duration", type=float, default=30.0, help="steady phase, seconds")
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--baseline-duration", type=float, default=8.0)
    parser.add_argument("--outage", type=float, default=20.0, help="seconds without PostgreSQL")
    parser.add_argument("--recovery-timeout", type=float, default=120.0)
    parser.add_argument("--replay-rows", type=int, default=5_000)
    parser.add_argument(
        "--ingestd-env", action="append", default=[], metavar="NAME=VALUE", help="repeatable"
    )
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    if not (1 <= args.gateways <= 1000 and 0 < args.warmup < args.duration <= 600):
        print("need 1 <= gateways <= 1000 and 0 < warmup < duration <= 600", file=sys.stderr)
        return 2
    if any("=" not in kv or not kv.startswith("INGESTD_") for kv in args.ingestd_env):
        print("--ingestd-env takes INGESTD_NAME=VALUE", file=sys.stderr)
        return 2
    exit_on_sigterm()
    started = time.monotonic()
    with temporary_cluster(prefix="fleet-bench-gateways-") as cluster:
        dsn = create_central_database(cluster)
        machine = machine_info(dsn)
        result = asyncio.run(scenario(args, cluster, dsn))
    result = report(result, args)
    result.update(
        benchmark="gateways",
        config={k: v for k, v in vars(args).items() if k != "json"},
        machine=machine,
        runtime_s=time.monotonic() - started,
    )
    finish("gateways", result, figures(result), args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
