"""ingestd's CPU per small batch, this checkout against another tree, in one run (issue 26).

    uv run python bench/request_ab.py --before ../fleet-before [--encoding both] [--rounds 4]

Two `ingestd serve` processes, each on its own central database in one throwaway cluster: one
runs the code of `--before` (a checkout or worktree: its `fleetcore`, `fleetservice` and
`ingestd` sources first on PYTHONPATH, with this checkout's virtualenv), the other this
checkout's. One generator drives both at the same time at the same `--rate` (gzip JSON or zstd
columnar gateway minutes of 27 rows, each a new tick of one of `--gateways` gateways per side,
as bench/fleet.py's generator sends them; each gateway's full sets once first), alternating
which side gets each request first, for `--rounds` windows of `--window` s. Each window's
figure per side is that process's CPU (user + system, from /proc) divided by the requests it
answered, so whatever else loads the machine loads both alike; the paired differences per
round are the result, the medians the summary. `fleet.py --capacity` gives the absolute
figure; this says what a change did to it. `--encoding apart` sends gzip JSON to the `--before`
side and columnar to this checkout's (with `--before .`: the same code, so the paired differences
are what the columnar encoding costs over JSON, both processes loaded alike). Results go to
bench/results/request_ab-<time>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
from bodies import JSON_HEADERS, ValuePool, body_headers
from common import IngestdProcess, create_central_database, exit_on_sigterm
from fleetcore.protocol import BATCH_TYPE_HEADER, INGEST_PATH, TOKEN_HEADER
from fleetdev.pgcluster import temporary_cluster
from report import Figure, finish
from simulator import Gateway, build_gateways, register_gateways

SOURCES = ("packages/fleetcore/src", "packages/fleetservice/src", "services/ingestd/src")
SIDES = ("before", "after")
METERS = 27
_CLK_TCK = 100


def _cpu(pid: int) -> tuple[float, float]:
    """User and system CPU seconds of a process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / _CLK_TCK, int(fields[12]) / _CLK_TCK


def _pythonpath(tree: Path) -> str:
    return ":".join(str(tree.resolve() / s) for s in SOURCES)


class Sides:
    """Both ingestd processes, their gateways and what each answered."""

    def __init__(self, procs: dict[str, IngestdProcess], tokens: dict[str, list[str]]) -> None:
        rng = random.Random(1)
        self.procs = procs
        self.gateways = {s: build_gateways(tokens[s], 60, (METERS, METERS), rng) for s in SIDES}
        self.ticks = {s: [0] * len(tokens[s]) for s in SIDES}
        self.statuses: dict[str, Counter[str]] = {s: Counter() for s in SIDES}
        self.base = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=20)

    async def post(
        self, session: aiohttp.ClientSession, side: str, headers: dict[str, str], body: bytes
    ) -> None:
        url = self.procs[side].base_url + INGEST_PATH
        try:
            async with session.post(url, data=body, headers=headers) as response:
                await response.read()
                self.statuses[side][str(response.status)] += 1
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            self.statuses[side][type(exc).__name__] += 1

    def next_batch(self, side: str, i: int, pool: ValuePool) -> tuple[dict[str, str], bytes]:
        gateway: Gateway = self.gateways[side][i % len(self.gateways[side])]
        tick = self.ticks[side][gateway.index]
        self.ticks[side][gateway.index] += 1
        body = pool.measurements(gateway, [(tick, self.base + timedelta(minutes=tick))])
        headers = body_headers(pool.encoding, body)
        return {TOKEN_HEADER: gateway.token, BATCH_TYPE_HEADER: "measurements", **headers}, body


async def _window(
    sides: Sides,
    sessions: dict[str, aiohttp.ClientSession],
    pools: dict[str, ValuePool],
    seconds: float,
    rate: float,
) -> dict[str, dict[str, Any]]:
    """`seconds` of `rate` requests/s to each side; CPU per request answered, per side."""
    loop = asyncio.get_running_loop()
    for counter in sides.statuses.values():
        counter.clear()
    before = {s: _cpu(sides.procs[s].pid) for s in SIDES}
    started = loop.time()
    tasks = []
    for i in range(int(seconds * rate)):
        delay = started + i / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        for side in SIDES if i % 2 == 0 else SIDES[::-1]:
            headers, body = sides.next_batch(side, i, pools[side])
            tasks.append(asyncio.create_task(sides.post(sessions[side], side, headers, body)))
    await asyncio.gather(*tasks)
    out = {}
    for side in SIDES:
        user, system = (
            b - a for a, b in zip(before[side], _cpu(sides.procs[side].pid), strict=True)
        )
        answered = max(1, sum(sides.statuses[side].values()))
        out[side] = {
            "ms_per_request": (user + system) / answered * 1000,
            "user_ms": user / answered * 1000,
            "system_ms": system / answered * 1000,
            "statuses": dict(sides.statuses[side]),
        }
    return out


def _columnar(encoding: str, side: str) -> bool:
    """Whether `side` gets columnar bodies (`apart`: the after side columnar, the before JSON)."""
    return encoding == "columnar" or (encoding == "apart" and side == "after")


async def drive(args: argparse.Namespace, sides: Sides) -> dict[str, Any]:
    sessions = {s: aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=32)) for s in SIDES}
    try:
        for side in SIDES:  # each gateway's full sets once, as a pusher's first tick sends them
            for g in sides.gateways[side]:
                for kind, body in (("sites", g.sites_body), ("devices", g.devices_body)):
                    assert body is not None
                    headers = {TOKEN_HEADER: g.token, BATCH_TYPE_HEADER: kind, **JSON_HEADERS}
                    await sides.post(sessions[side], side, headers, body)
        results: dict[str, Any] = {}
        for encoding in ("json", "columnar") if args.encoding == "both" else (args.encoding,):
            pools = {s: ValuePool(columnar=_columnar(encoding, s)) for s in SIDES}
            for pool in pools.values():
                if pool.columnar:
                    pool.prepare_columnar(range(METERS, METERS + 1))
            await _window(sides, sessions, pools, 5.0, args.rate)  # warm both
            rounds = []
            for r in range(args.rounds):
                window = await _window(sides, sessions, pools, args.window, args.rate)
                window["loadavg"] = f"{os.getloadavg()[0]:.2f}"
                rounds.append(window)
                print(
                    f"{encoding} round {r}: before {window['before']['ms_per_request']:.2f}, "
                    f"after {window['after']['ms_per_request']:.2f} ms CPU per request "
                    f"({window['before']['statuses']} / {window['after']['statuses']}), "
                    f"load {window['loadavg']}",
                    flush=True,
                )
            results[encoding] = rounds
        return results
    finally:
        for session in sessions.values():
            await session.close()


def _figures(results: dict[str, Any]) -> list[Figure]:
    figures = []
    for encoding, rounds in results.items():
        medians = {s: statistics.median(r[s]["ms_per_request"] for r in rounds) for s in SIDES}
        diffs = [r["after"]["ms_per_request"] - r["before"]["ms_per_request"] for r in rounds]
        figures.append(
            Figure.of(
                f"ingestd CPU per 27-row {encoding} batch, before -> after"
                if encoding != "apart"
                else "ingestd CPU per 27-row batch, gzip JSON (before) -> columnar (after)",
                f"{medians['before']:.2f} -> {medians['after']:.2f} ms",
                "after - before per round: " + ", ".join(f"{d:+.2f}" for d in diffs),
            )
        )
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", type=Path, required=True, help="the other tree")
    parser.add_argument(
        "--encoding",
        choices=("json", "columnar", "both", "apart"),
        default="both",
        help="apart: gzip JSON to the before side, columnar to this checkout's",
    )
    parser.add_argument("--gateways", type=int, default=200, help="per side")
    parser.add_argument("--rate", type=float, default=30.0, help="requests/s per side")
    parser.add_argument("--window", type=float, default=20.0, help="seconds per round")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--timescaledb", action="store_true", help="both sides on TimescaleDB")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    if not all((args.before / s).is_dir() for s in SOURCES):
        print(f"{args.before} is not a Fleet checkout (no {SOURCES[-1]})", file=sys.stderr)
        return 2
    exit_on_sigterm()
    trees = {"before": args.before, "after": Path(__file__).resolve().parent.parent}
    with temporary_cluster(timescaledb=args.timescaledb) as cluster:
        dsns = {
            s: create_central_database(cluster, f"central_{s}", timescale=args.timescaledb)
            for s in SIDES
        }
        tokens = {s: register_gateways(dsns[s], args.gateways) for s in SIDES}
        env = {"INGESTD_TIMESCALEDB": "on" if args.timescaledb else "off"}
        procs = {
            s: IngestdProcess(dsns[s], extra_env={**env, "PYTHONPATH": _pythonpath(trees[s])})
            for s in SIDES
        }
        try:
            for proc in procs.values():
                proc.start()
            results = asyncio.run(drive(args, Sides(procs, tokens)))
        finally:
            for proc in procs.values():
                proc.stop()
    result = {
        "benchmark": "request_ab",
        "config": {k: str(v) for k, v in vars(args).items() if k != "json"},
        "rounds": results,
    }
    finish("request_ab", result, _figures(results), args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
