"""What a full set costs ingestd and PostgreSQL beside a measurement batch, in one run (issue 26).

    uv run python bench/full_set_cost.py [--rounds 4] [--window 10] [--rate 30] [--timescaledb]

The warm-up minute of a fleet (every gateway's first tick) sends each gateway's sites and devices
full sets beside its first measurement batch, and the refused ones come back beside the regular
traffic. This says what each kind costs, per request answered: one ingestd at its defaults on a
throwaway cluster, `--rate` requests/s of one kind at a time for `--window` s, the kinds taking
turns in each of `--rounds` rounds so a busy machine slows them alike:

  sites        a gateway's first sites full set (1-3 rows: all new)
  devices      its first devices full set (5-50 rows: all new), after its sites
  devices again  the same devices full set once more (every row already stored as sent)
  measurements a gateway minute of 27 meters, gzip JSON (bench/fleet.py's generator)

Each figure is the CPU (user + system, from /proc) of ingestd and of the whole PostgreSQL
cluster in the window divided by the requests answered. Results go to
bench/results/full_set_cost-<time>.json (or --json).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
from bodies import JSON_HEADERS, ValuePool
from common import (
    IngestdProcess,
    cpu_seconds,
    create_central_database,
    exit_on_sigterm,
    postgres_cpu_seconds,
)
from fleetcore.protocol import BATCH_TYPE_HEADER, INGEST_PATH, TOKEN_HEADER
from fleetdev.pgcluster import PgCluster, temporary_cluster
from report import Figure, finish
from simulator import Gateway, build_gateways, register_gateways

KINDS = ("sites", "devices", "devices again", "measurements")
METERS = (5, 50)
Request = tuple[dict[str, str], bytes]


class Fleet:
    """Gateways handed out fresh for first contacts, and what each window's requests answered."""

    def __init__(self, tokens: list[str]) -> None:
        self.gateways = build_gateways(tokens, 60, METERS, random.Random(1))
        self.fresh = 0  # gateways[:fresh] have sent their sites
        self.devices_sent = 0  # gateways[:devices_sent] have sent their devices
        self.again = 0
        self.ticks = 0
        self.pool = ValuePool(columnar=False)
        self.base = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=20)
        self.statuses: Counter[str] = Counter()

    def _full_set(self, g: Gateway, kind: str) -> Request:
        body = g.sites_body if kind == "sites" else g.devices_body
        assert body is not None
        return {TOKEN_HEADER: g.token, BATCH_TYPE_HEADER: kind, **JSON_HEADERS}, body

    def next(self, kind: str) -> Request:
        if kind == "sites":
            self.fresh += 1
            return self._full_set(self.gateways[self.fresh - 1], "sites")
        if kind == "devices":
            self.devices_sent += 1
            return self._full_set(self.gateways[self.devices_sent - 1], "devices")
        if kind == "devices again":
            self.again += 1
            return self._full_set(self.gateways[(self.again - 1) % self.devices_sent], "devices")
        self.ticks += 1
        g = self.gateways[self.ticks % max(1, self.devices_sent)]
        body = self.pool.measurements(g, [(self.ticks, self.base + timedelta(minutes=self.ticks))])
        return {TOKEN_HEADER: g.token, BATCH_TYPE_HEADER: "measurements", **JSON_HEADERS}, body

    async def post(self, session: aiohttp.ClientSession, url: str, request: Request) -> None:
        headers, body = request
        try:
            async with session.post(url, data=body, headers=headers) as response:
                await response.read()
                self.statuses[str(response.status)] += 1
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            self.statuses[type(exc).__name__] += 1


async def _window(
    fleet: Fleet,
    session: aiohttp.ClientSession,
    url: str,
    make: Callable[[], Request],
    seconds: float,
    rate: float,
    meters: Callable[[], tuple[float, float]],
) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    fleet.statuses.clear()
    before = meters()
    started = loop.time()
    tasks = []
    for i in range(int(seconds * rate)):
        delay = started + i / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(fleet.post(session, url, make())))
    await asyncio.gather(*tasks)
    after = meters()
    answered = max(1, fleet.statuses["200"])
    return {
        "ingestd_ms": (after[0] - before[0]) / answered * 1000,
        "postgres_ms": (after[1] - before[1]) / answered * 1000,
        "statuses": dict(fleet.statuses),
        "loadavg": f"{os.getloadavg()[0]:.2f}",
    }


async def drive(
    args: argparse.Namespace, fleet: Fleet, proc: IngestdProcess, cluster: PgCluster
) -> list[dict[str, Any]]:
    url = proc.base_url + INGEST_PATH

    def meters() -> tuple[float, float]:
        return cpu_seconds(proc.pid), postgres_cpu_seconds(cluster)

    rounds = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=32)) as session:
        for kind in KINDS:  # warm each path
            await _window(fleet, session, url, lambda k=kind: fleet.next(k), 2.0, args.rate, meters)
        for r in range(args.rounds):
            order = KINDS if r % 2 == 0 else ("measurements", "sites", "devices", "devices again")
            result = {}
            for kind in order:
                result[kind] = await _window(
                    fleet,
                    session,
                    url,
                    lambda k=kind: fleet.next(k),
                    args.window,
                    args.rate,
                    meters,
                )
            print(
                f"round {r}: "
                + "; ".join(
                    f"{k} {v['ingestd_ms']:.2f} + {v['postgres_ms']:.2f} ms {v['statuses']}"
                    for k, v in result.items()
                )
                + f" (ingestd + PostgreSQL CPU per request), load {os.getloadavg()[0]:.2f}",
                flush=True,
            )
            rounds.append(result)
    return rounds


def _figures(rounds: list[dict[str, Any]]) -> list[Figure]:
    figures = []
    for kind in KINDS:
        own = statistics.median(r[kind]["ingestd_ms"] for r in rounds)
        pg = statistics.median(r[kind]["postgres_ms"] for r in rounds)
        figures.append(
            Figure.of(
                f"CPU per {kind} request, ingestd + PostgreSQL",
                f"{own:.2f} + {pg:.2f} ms",
                "per round: "
                + ", ".join(
                    f"{r[kind]['ingestd_ms']:.2f}+{r[kind]['postgres_ms']:.2f}" for r in rounds
                ),
            )
        )
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=30.0, help="requests/s")
    parser.add_argument("--window", type=float, default=10.0, help="seconds per kind and round")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--timescaledb", action="store_true")
    parser.add_argument("--ingestd-env", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    exit_on_sigterm()
    fresh_needed = int(args.rate * (2.0 + args.window * args.rounds)) + 10
    with temporary_cluster(timescaledb=args.timescaledb) as cluster:
        dsn = create_central_database(cluster, "central", timescale=args.timescaledb)
        fleet = Fleet(register_gateways(dsn, fresh_needed))
        env = {"INGESTD_TIMESCALEDB": "on" if args.timescaledb else "off"}
        env.update(dict(e.split("=", 1) for e in args.ingestd_env))
        with IngestdProcess(dsn, extra_env=env) as proc:
            rounds = asyncio.run(drive(args, fleet, proc, cluster))
    result = {
        "benchmark": "full_set_cost",
        "config": {k: str(v) for k, v in vars(args).items() if k != "json"},
        "rounds": rounds,
    }
    finish("full_set_cost", result, _figures(rounds), args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
