"""A small batch's parts timed inside a running ingestd: thread CPU per request (issue 26).

    uv run python bench/request_probe.py [--encoding json] [--rate 30] [--seconds 60] \
        [--functions module:qualname,...]

One `ingestd serve` on a throwaway cluster, started with `thread_cpu_probe` (bench/
thread_cpu_probe.py: a `sitecustomize` wraps the named functions as their modules load), driven
as bench/request_ab.py drives its two: `--gateways` gateways, each's full sets once, then 27-row
gateway minutes at `--rate` requests/s for `--seconds` (after a 5 s warm-up). Prints, per
function, its thread CPU per request answered (an `async def` only while it runs: inclusive of
what it calls and awaits, not of other tasks), beside ingestd's whole CPU per request from /proc.
Entries nest (a caller includes its callees); each wrapped call adds ~1-2 µs to itself and its
callers. `--functions` replaces the default list (`DEFAULT`: the handler's steps, psycopg's and
the pool's, aiohttp's reading and writing). Results go to bench/results/request_probe-<time>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
from bodies import JSON_HEADERS, ValuePool, body_headers
from common import IngestdProcess, create_central_database, exit_on_sigterm
from fleetcore.protocol import BATCH_TYPE_HEADER, INGEST_PATH, TOKEN_HEADER
from fleetdev.pgcluster import temporary_cluster
from report import Figure, finish
from simulator import build_gateways, register_gateways

METERS = 27
_CLK_TCK = 100
DEFAULT = (
    "aiohttp.web_protocol:RequestHandler.data_received",
    "aiohttp.web_protocol:RequestHandler.finish_response",
    "ingestd.app:error_middleware",
    "ingestd.handlers.ingest:ingest",
    "ingestd.handlers.ingest:authenticate",
    "ingestd.admission:Admission.check",
    "ingestd.admission:Admission.spread",
    "ingestd.admission:Admission.acquire",
    "ingestd.admission:Admission.release",
    "ingestd.memory:BodyMemory.release",
    "ingestd.ratelimit:RateLimiter.acquire",
    "ingestd.body:check_content_headers",
    "ingestd.body:read_wire_body",
    "ingestd.decoding:decode",
    "ingestd.ingest:ingest_batch",
    "ingestd.ingest:_store",
    "ingestd.storage.state:StorageState.prepare",
    "ingestd.storage.writes:store_small_batch",
    "ingestd.storage.writes:_array_params",
    "psycopg_pool.pool_async:AsyncConnectionPool.getconn",
    "psycopg_pool.pool_async:AsyncConnectionPool.putconn",
    "psycopg.cursor_async:AsyncCursor.execute",
    "psycopg.cursor_async:AsyncCursor.fetchone",
    "psycopg._queries:PostgresQuery.convert",
    "psycopg.waiting:wait_async",
    "ingestd.metrics:IngestMetrics.observe_batch",
    "ingestd.metrics:IngestMetrics.observe_request",
    "ingestd.handlers.http:json_answer",
    "structlog._config:BoundLoggerLazyProxy.bind",
    "structlog._base:BoundLoggerBase._process_event",
    "structlog.contextvars:bind_contextvars",
    "structlog.contextvars:clear_contextvars",
    "fleetservice.logs:_LineLogger.info",
    "uuid:uuid4",
)
_SITECUSTOMIZE = "import thread_cpu_probe\nthread_cpu_probe.install()\n"


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def _totals(proc: IngestdProcess, out: Path) -> dict[str, list[int]]:
    """The probe's totals now (SIGUSR1, then its file)."""
    stamp = out.stat().st_mtime_ns if out.exists() else 0
    os.kill(proc.pid, signal.SIGUSR1)
    for _ in range(200):  # bounded: 10 s
        if out.exists() and out.stat().st_mtime_ns != stamp:
            return dict(json.loads(out.read_text()))
        time.sleep(0.05)
    raise RuntimeError("the probe did not answer SIGUSR1 (FLEET_PROBE loaded?)")


async def _drive(
    args: argparse.Namespace, proc: IngestdProcess, tokens: list[str], out: Path
) -> dict[str, Any]:
    rng = random.Random(1)
    gateways = build_gateways(tokens, 60, (METERS, METERS), rng)
    ticks = [0] * len(gateways)
    base = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=20)
    url = proc.base_url + INGEST_PATH
    pool = ValuePool(columnar=args.encoding == "columnar")
    if pool.columnar:
        pool.prepare_columnar(range(METERS, METERS + 1))
    statuses: dict[str, int] = {}
    loop = asyncio.get_running_loop()

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=32)) as session:

        async def post(headers: dict[str, str], body: bytes) -> None:
            try:
                async with session.post(url, data=body, headers=headers) as response:
                    await response.read()
                    key = str(response.status)
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                key = type(exc).__name__
            statuses[key] = statuses.get(key, 0) + 1

        for g in gateways:  # each gateway's full sets once, as a pusher's first tick sends them
            for kind, body in (("sites", g.sites_body), ("devices", g.devices_body)):
                assert body is not None
                await post({TOKEN_HEADER: g.token, BATCH_TYPE_HEADER: kind, **JSON_HEADERS}, body)

        async def window(seconds: float) -> None:
            started, tasks = loop.time(), []
            for i in range(int(seconds * args.rate)):
                delay = started + i / args.rate - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                g = gateways[i % len(gateways)]
                body = pool.measurements(
                    g, [(ticks[g.index], base + timedelta(minutes=ticks[g.index]))]
                )
                ticks[g.index] += 1
                headers = body_headers(pool.encoding, body)
                headers = {TOKEN_HEADER: g.token, BATCH_TYPE_HEADER: "measurements", **headers}
                tasks.append(asyncio.create_task(post(headers, body)))
            await asyncio.gather(*tasks)

        await window(5.0)  # warm
        statuses.clear()
        before, cpu_before = _totals(proc, out), _cpu_s(proc.pid)
        await window(args.seconds)
        after, cpu_after = _totals(proc, out), _cpu_s(proc.pid)
    answered = max(1, sum(statuses.values()))
    parts = {
        name: {
            "calls_per_request": (calls - before.get(name, [0, 0])[0]) / answered,
            "us_per_request": (ns - before.get(name, [0, 0])[1]) / answered / 1000,
        }
        for name, (calls, ns) in after.items()
    }
    return {
        "statuses": statuses,
        "answered": answered,
        "ms_per_request_proc": (cpu_after - cpu_before) / answered * 1000,
        "loadavg": f"{os.getloadavg()[0]:.2f}",
        "parts": parts,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--encoding", choices=("json", "columnar"), default="json")
    parser.add_argument("--gateways", type=int, default=200)
    parser.add_argument("--rate", type=float, default=30.0, help="requests/s")
    parser.add_argument("--seconds", type=float, default=60.0, help="the measured window")
    parser.add_argument("--functions", help="module:qualname,... (default: DEFAULT)")
    parser.add_argument("--timescaledb", action="store_true")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    exit_on_sigterm()
    functions = args.functions or ",".join(DEFAULT)
    bench = Path(__file__).resolve().parent
    with tempfile.TemporaryDirectory(prefix="fleet-probe-") as tmp:
        Path(tmp, "sitecustomize.py").write_text(_SITECUSTOMIZE)
        out = Path(tmp, "totals.json")
        env = {
            "INGESTD_TIMESCALEDB": "on" if args.timescaledb else "off",
            "PYTHONPATH": os.pathsep.join([tmp, str(bench), os.environ.get("PYTHONPATH", "")]),
            "FLEET_PROBE": functions,
            "FLEET_PROBE_OUT": str(out),
        }
        with temporary_cluster(timescaledb=args.timescaledb) as cluster:
            dsn = create_central_database(cluster, "central", timescale=args.timescaledb)
            tokens = register_gateways(dsn, args.gateways)
            proc = IngestdProcess(dsn, extra_env=env)
            try:
                proc.start()
                result = asyncio.run(_drive(args, proc, tokens, out))
            finally:
                proc.stop()
    print(
        f"{args.encoding}: {result['answered']} requests {result['statuses']}, "
        f"{result['ms_per_request_proc']:.2f} ms CPU per request (/proc), load {result['loadavg']}"
    )
    print(f"{'function':<64} {'calls/req':>9} {'us/req':>8}")
    for name, part in sorted(result["parts"].items(), key=lambda kv: -kv[1]["us_per_request"]):
        print(f"{name:<64} {part['calls_per_request']:9.2f} {part['us_per_request']:8.1f}")
    figures = [
        Figure.of(
            f"ingestd CPU per 27-row {args.encoding} batch under the probe (/proc)",
            f"{result['ms_per_request_proc']:.2f} ms",
            f"{len(result['parts'])} functions timed, load {result['loadavg']}",
        )
    ]
    finish(
        "request_probe",
        {"benchmark": "request_probe", "config": vars(args) | {"json": None}, **result},
        figures,
        args.json,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
