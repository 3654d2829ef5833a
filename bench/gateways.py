"""Many gateways: N small pushers at one ingestd, steady, then through a central outage.

    uv run python bench/gateways.py [--gateways 200] [--duration 30] [--outage 20]

One throwaway PostgreSQL cluster with the central database, N customers each with its own
token (registered in bulk with SQL and `fleetcore.hash_token`), one `ingestd serve` subprocess.
Each simulated gateway is one asyncio task with its own aiohttp session; every second (from a
random phase) it produces a batch of 100 rows into its local queue and sends the head of the
queue, one request in flight, as the pusher does: a backlog goes out in requests of up to
`--replay-rows` rows (the pusher's PUSHER_BATCH_SIZE, 5,000); 429/503 are retried after
Retry-After plus jitter and other failures after a full-jitter exponential backoff, with the
pusher's own retry policy (`pusher.retry.RetryPolicy`).

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
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import psycopg
from common import (
    IngestdProcess,
    cpu_seconds,
    create_central_database,
    exit_on_sigterm,
    generate_measurements,
    machine_info,
    measurement_items,
    peak_rss_bytes,
    write_results,
)
from fleetcore import generate_token, hash_token, token_hint
from fleetdev.pgcluster import PgCluster, temporary_cluster
from pusher.delivery import gzip_body
from pusher.retry import RetryEvent, RetryPolicy, parse_retry_after

INGEST_PATH = "/api/fleet/ingest"
ROWS_PER_BATCH = 100
TARGET_P99_MS = 250.0
JITTER_S = 2.0  # the pusher's PUSHER_RETRY_AFTER_JITTER_S default
BACKOFF_BASE_S, BACKOFF_CAP_S = 1.0, 30.0

INSERT_CUSTOMERS = """
INSERT INTO fleet.customers (code, name)
SELECT 'GW' || lpad(g::text, 5, '0'), 'Gateway ' || g FROM generate_series(1, %s) AS g
RETURNING id
"""
INSERT_TOKEN = (
    "INSERT INTO fleet.customer_tokens (token_hash, customer_id, hint) VALUES (%s, %s, %s)"
)
COUNT_CONNECTIONS = "SELECT count(*) FROM pg_stat_activity WHERE datname = %s"


def register_gateways(dsn: str, count: int) -> list[str]:
    """`count` customers with one token each, in two statements; returns the tokens."""
    with psycopg.connect(dsn) as conn:
        ids = [row[0] for row in conn.execute(INSERT_CUSTOMERS, (count,)).fetchall()]
        tokens = [generate_token() for _ in ids]
        with conn.cursor() as cur:
            cur.executemany(
                INSERT_TOKEN,
                [(hash_token(t), i, token_hint(t)) for t, i in zip(tokens, ids, strict=True)],
            )
    return tokens


class Batches:
    """The small batches every gateway produces, pre-encoded; a backlog is joined per request."""

    def __init__(self, count: int) -> None:
        rows = generate_measurements(count * ROWS_PER_BATCH, devices=10)
        items = measurement_items(rows)
        self.fragments = [
            msgspec.json.encode(items[i : i + ROWS_PER_BATCH])[1:-1]
            for i in range(0, len(items), ROWS_PER_BATCH)
        ]
        self.single = [self._body([f]) for f in self.fragments]

    @staticmethod
    def _body(fragments: Sequence[bytes]) -> bytes:
        return gzip_body(b'{"items":[' + b",".join(fragments) + b"]}", 1)

    def body(self, first: int, count: int) -> bytes:
        if count == 1:
            return self.single[first]
        return self._body(self.fragments[first : first + count])


@dataclass
class Record:
    phase: str
    sent_at: float
    latency_s: float
    status: str  # HTTP status, or the exception's name
    rows: int


@dataclass
class Run:
    """What all gateways share: the phase clock, the records, the batches."""

    url: str
    batches: Batches
    replay_batches: int
    phase: str = "steady"
    restarted_at: float | None = None
    records: list[Record] = field(default_factory=list)
    caught_up_at: dict[int, float] = field(default_factory=dict)
    all_caught_up: asyncio.Event = field(default_factory=asyncio.Event)
    gateways: int = 1
    backlog_at_restart: int = 0


@dataclass
class Gateway:
    index: int
    token: str
    queue: deque[int] = field(default_factory=deque)
    produced: int = 0
    failures: int = 0
    retry_at: float = 0.0

    async def run(self, run: Run, end: float, rng: random.Random) -> None:
        headers = {
            "X-Customer-Token": self.token,
            "X-Batch-Type": "measurements",
            "Content-Type": "application/json",
            "Content-Encoding": "gzip",
        }
        next_tick = time.monotonic() + rng.random()
        limit = len(run.batches.fragments)
        timeout = aiohttp.ClientTimeout(total=60)
        async with aiohttp.ClientSession(
            timeout=timeout, connector=aiohttp.TCPConnector(limit=1)
        ) as session:
            while (now := time.monotonic()) < end:
                while next_tick <= now and self.produced < limit:
                    self.queue.append(self.produced)
                    self.produced += 1
                    next_tick += 1.0
                if self.queue and now >= self.retry_at:
                    await self._send(session, headers, run, rng)
                    continue
                wake = min(next_tick, end, self.retry_at if self.queue else end)
                await asyncio.sleep(max(0.001, wake - now))

    async def _send(
        self,
        session: aiohttp.ClientSession,
        headers: dict[str, str],
        run: Run,
        rng: random.Random,
    ) -> None:
        count = min(len(self.queue), run.replay_batches)
        body = run.batches.body(self.queue[0], count)
        phase, started = run.phase, time.monotonic()
        retry_after: float | None = None
        try:
            async with session.post(run.url, data=body, headers=headers) as resp:
                await resp.read()
                status = str(resp.status)
                retry_after = parse_retry_after(resp.headers.get("Retry-After"))
        except (aiohttp.ClientError, TimeoutError) as exc:
            status = type(exc).__name__
        done = time.monotonic()
        run.records.append(Record(phase, started, done - started, status, count * ROWS_PER_BATCH))
        if status == "200":
            for _ in range(count):
                self.queue.popleft()
            self.failures = 0
            if (
                not self.queue
                and run.restarted_at is not None
                and self.index not in run.caught_up_at
            ):
                run.caught_up_at[self.index] = done
                if len(run.caught_up_at) >= run.gateways:
                    run.all_caught_up.set()
            return
        self.failures += 1
        event = RetryEvent.RETRY_LATER if status in ("429", "503") else RetryEvent.TRANSIENT
        policy = RetryPolicy(BACKOFF_BASE_S, BACKOFF_CAP_S, JITTER_S, rng)
        delay = policy.delay(event, self.failures, retry_after_s=retry_after)
        self.retry_at = done + delay


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


def latency_stats(records: Sequence[Record]) -> dict[str, Any]:
    ok = sorted(r.latency_s * 1000 for r in records if r.status == "200")
    out: dict[str, Any] = {
        "requests": len(records),
        "ok": len(ok),
        "statuses": dict(Counter(r.status for r in records)),
        "rows_ok": sum(r.rows for r in records if r.status == "200"),
    }
    if len(ok) >= 2:
        q = statistics.quantiles(ok, n=100, method="inclusive")
        out.update(p50_ms=q[49], p95_ms=q[94], p99_ms=q[98], max_ms=ok[-1])
    return out


async def run_gateways(gateways: Sequence[Gateway], run: Run, duration_s: float, seed: int) -> None:
    end = time.monotonic() + duration_s
    async with asyncio.TaskGroup() as group:
        for g in gateways:
            group.create_task(g.run(run, end, random.Random(seed + g.index)))


async def scenario(args: argparse.Namespace, cluster: PgCluster, dsn: str) -> dict[str, Any]:
    tokens = register_gateways(dsn, args.gateways + 1)
    total_s = args.baseline_duration + args.duration + args.outage + args.recovery_timeout
    batches = Batches(int(total_s) + 10)
    env = {"INGESTD_RATE_LIMIT_PER_S": "50", "INGESTD_RATE_LIMIT_BURST": "100"}
    env.update(dict(kv.split("=", 1) for kv in args.ingestd_env))
    result: dict[str, Any] = {"ingestd_env": env}
    with IngestdProcess(dsn, extra_env=env) as ingestd:
        url = ingestd.base_url + INGEST_PATH
        replay = max(1, args.replay_rows // ROWS_PER_BATCH)

        base = Run(url, batches, replay)
        await run_gateways([Gateway(args.gateways, tokens[-1])], base, args.baseline_duration, 7)
        result["baseline_1_gateway"] = latency_stats(
            [r for r in base.records if r.sent_at - base.records[0].sent_at >= 2.0]
        )
        print(f"  baseline done: {_brief(result['baseline_1_gateway'])}", file=sys.stderr)

        run = Run(url, batches, replay, gateways=args.gateways)
        gateways = [Gateway(i, tokens[i]) for i in range(args.gateways)]
        stop_polling = asyncio.Event()
        poller = asyncio.create_task(poll_connections(cluster, "fleet_central", stop_polling))
        lag: list[float] = []
        started = time.monotonic()
        steady_end = started + args.duration
        horizon = args.duration + args.outage + args.recovery_timeout
        gateways_task = asyncio.create_task(run_gateways(gateways, run, horizon, 11))
        monitor = asyncio.create_task(_loop_lag(lag, started + horizon))
        try:
            await asyncio.sleep(args.warmup)
            cpu0, client0, t0 = cpu_seconds(ingestd.pid), time.process_time(), time.monotonic()
            await asyncio.sleep(max(0.0, steady_end - time.monotonic()))
            cpu1, client1, t1 = cpu_seconds(ingestd.pid), time.process_time(), time.monotonic()
            steady = [r for r in run.records if t0 <= r.sent_at < t1 and r.phase == "steady"]
            result["steady"] = latency_stats(steady)
            result["steady"]["requests_per_s"] = len(steady) / (t1 - t0)
            result["steady"]["window_s"] = t1 - t0
            result["steady"]["ingestd_cpu_ms_per_request"] = 1000 * (cpu1 - cpu0) / len(steady)
            result["steady"]["ingestd_cpu_share"] = (cpu1 - cpu0) / (t1 - t0)
            result["steady"]["client_cpu_share"] = (client1 - client0) / (t1 - t0)
            third = (t1 - t0) / 3
            result["steady"]["p99_ms_per_third"] = [
                latency_stats([r for r in steady if w <= r.sent_at < w + third]).get("p99_ms")
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
            run.backlog_at_restart = sum(len(g.queue) for g in gateways) * ROWS_PER_BATCH
            run.phase = "recovery"
            await asyncio.to_thread(cluster.start)
            run.restarted_at = time.monotonic()
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
        caught_up = [t - run.restarted_at for t in run.caught_up_at.values()]
        recovery = [r for r in run.records if r.phase == "recovery"]
        first_ok = min((r.sent_at for r in recovery if r.status == "200"), default=None)
        result["outage"] = latency_stats([r for r in run.records if r.phase == "outage"])
        result["recovery"] = {
            **latency_stats(recovery),
            "backlog_rows_at_restart": run.backlog_at_restart,
            "gateways_caught_up": len(caught_up),
            "time_to_all_caught_up_s": max(caught_up) if len(caught_up) == len(gateways) else None,
            "time_to_half_caught_up_s": statistics.median(caught_up) if caught_up else None,
            # Without the wait the 503s of the outage asked for (Retry-After + jitter):
            "drain_after_first_success_s": max(run.caught_up_at.values()) - first_ok
            if first_ok is not None and len(caught_up) == len(gateways)
            else None,
            "answers_429": sum(r.status == "429" for r in recovery),
            "answers_503": sum(r.status == "503" for r in recovery),
        }
        result["peak_db_connections"] = max(counts, default=None)
        result["ingestd_peak_rss_mib"] = peak_rss_bytes(ingestd.pid) / 2**20
    print(f"  recovery done: {result['recovery']}", file=sys.stderr)
    return result


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
    p99 = steady.get("p99_ms")
    met = p99 is not None and p99 < TARGET_P99_MS and not set(steady["statuses"]) - {"200"}
    print(
        f"target: p99 < {TARGET_P99_MS:g} ms at {args.gateways} gateways: "
        f"{'MET' if met else 'NOT MET'} (p99 {p99 or float('nan'):.0f} ms)"
    )
    result["targets"] = {"steady_p99_ms": {"target": TARGET_P99_MS, "p99_ms": p99, "met": met}}
    return result


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
    path = write_results("gateways", result, args.json)
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
