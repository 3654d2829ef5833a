"""The fleet view end to end, real processes: `ingestd serve` and one `pusher run` per gateway, each
gateway its own customer database and token, push and heartbeat intervals of half a second.

A gateway with quarantined rows, one whose clock is 10 minutes off (its answers pass a proxy that
moves the server's `Date` by 10 minutes: the offset the pusher measures is the same), one that is
stopped, one running a version the centre no longer supports, and one whose cursor a long
transaction holds back: each shows in `GET /api/fleet/gateways` with its state, found within a
bounded wait (the time each took is printed: the target is two push intervals).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
import urllib.request
from collections.abc import AsyncIterator
from datetime import UTC, timedelta
from email.utils import format_datetime, parsedate_to_datetime
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
import pytest
from aiohttp import web
from fleetdev.pgcluster import PgCluster, free_port
from ingestd.customers import add_customer

from tests.fix_customer import seed_inventory, seed_measurements

BASE = {k: v for k, v in os.environ.items() if not k.startswith(("INGESTD_", "PUSHER_", "FLEET_"))}
ADMIN = "e2e-admin-" + "z" * 32
INTERVAL_S = 0.5
GATEWAYS = ("QUAR", "CLOCK", "STOP", "BLOCK")


LOGS: dict[int, Path] = {}


async def _start(service: str, *args: str, log: Path, **env: str) -> asyncio.subprocess.Process:
    """Start `python -m service args` with its output in `log` (shown when a wait fails)."""
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", service, *args, env={**BASE, **env}, stdout=out, stderr=out,
        )  # fmt: skip
    LOGS[proc.pid] = log
    return proc


def _exited(procs: dict[str, asyncio.subprocess.Process]) -> str:
    """What the processes that exited said last (empty when all still run)."""
    lines = []
    for name, proc in procs.items():
        if proc.returncode is not None:
            tail = LOGS[proc.pid].read_text(errors="replace").splitlines()[-15:]
            lines.append(f"{name} exited {proc.returncode}:\n" + "\n".join(tail))
    return "\n".join(lines)


async def _stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 30)
        except TimeoutError:
            proc.kill()
            await proc.wait()


def _ingestd_env(central: str, port: int, **extra: str) -> dict[str, str]:
    return {
        "INGESTD_DATABASE_URL": central,
        "INGESTD_PORT": str(port),
        "INGESTD_ADMIN_TOKEN": ADMIN,
        "INGESTD_LOG_FORMAT": "json",
        "INGESTD_FLEET_STATE_INTERVAL_S": "0.2",
        "INGESTD_GATEWAY_BLOCKED_S": "1",
        "INGESTD_GATEWAY_SILENT_FACTOR": "2",
        **extra,
    }


def _view(port: int, query: str = "") -> dict[str, Any]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/fleet/gateways{query}",
        headers={"Authorization": f"Bearer {ADMIN}"},
    )
    with urllib.request.urlopen(request, timeout=10) as resp:  # noqa: S310 - loopback
        body: dict[str, Any] = json.loads(resp.read())
    return body


def _states(port: int) -> dict[str, list[str]]:
    try:
        view = _view(port)
    except OSError:
        return {}
    return {g["customer"]: g["states"] for g in view["gateways"]}


async def _until(
    port: int,
    customer: str,
    state: str,
    timeout_s: float = 60.0,
    alive: dict[str, asyncio.subprocess.Process] | None = None,
) -> float:
    """Seconds until `customer`'s gateway shows `state` (any, when empty; fails past the
    bounded wait, or at once when one of the `alive` processes exited, with its last words)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if alive and (died := _exited(alive)):
            raise AssertionError(f"waiting for {customer} {state}: {died}")
        found = (await asyncio.to_thread(_states, port)).get(customer)
        if found is not None and (state in found or not state):
            return time.monotonic() - started
        await asyncio.sleep(0.05)
    died = _exited(alive or {})
    raise AssertionError(f"{customer} not {state} within {timeout_s}s: {_states(port)} {died}")


@contextlib.asynccontextmanager
async def _skewed_front(upstream: int, skew: timedelta) -> AsyncIterator[int]:
    """A proxy whose answers carry the server's `Date` moved by `skew` (a gateway whose clock is
    `skew` behind sees exactly this)."""
    session = aiohttp.ClientSession(auto_decompress=False)

    async def forward(request: web.Request) -> web.StreamResponse:
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host",)}
        async with session.request(
            request.method,
            f"http://127.0.0.1:{upstream}{request.path_qs}",
            data=await request.read(),
            headers=headers,
        ) as resp:
            body = await resp.read()
            out = {k: v for k, v in resp.headers.items()
                   if k.lower() not in ("content-length", "transfer-encoding", "date", "server")}  # fmt: skip
            moved = parsedate_to_datetime(resp.headers["Date"]) + skew
            out["Date"] = format_datetime(moved.astimezone(UTC), usegmt=True)
            return web.Response(body=body, status=resp.status, headers=out)

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_route("*", "/{tail:.*}", forward)
    runner = web.AppRunner(app, auto_decompress=False)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        yield port
    finally:
        await runner.cleanup()
        await session.close()


def _gateway_db(cluster: PgCluster, name: str) -> str:
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "customer_template"')
    dsn = cluster.dsn(name)
    seed_inventory(dsn, sites=1, devices=2)
    seed_measurements(dsn, devices=2, stop=30)
    return dsn


# In make chaos (a long run), not make test: in one full make test run the BLOCK gateway showed
# 'silent' instead of 'blocked' (its pusher out of contact; it passes alone, cause not found yet).
@pytest.mark.long
async def test_gateway_states_end_to_end(
    pg_cluster: PgCluster, customer_template: str, central_db: str, tmp_path: Path
) -> None:
    """Quarantined rows, a clock 10 minutes off, a stopped pusher, an unsupported version and a
    cursor blocked by a long transaction each show as their state in the fleet view."""
    port, strict_port = free_port(), free_port()
    tokens = {code: add_customer(central_db, code) for code in GATEWAYS}
    dbs = {code: _gateway_db(pg_cluster, f"gw_{code.lower()}_{os.getpid()}") for code in GATEWAYS}
    with psycopg.connect(dbs["QUAR"], autocommit=True) as conn:  # RFC 3339 cannot carry year 12000
        conn.execute(
            "INSERT INTO monitoring.power_measurements (device_id, time, p_total) "
            "VALUES (1, '12000-01-01T00:00:00Z', 1.0)"
        )
    ingestd = await _start(
        "ingestd", "serve", log=tmp_path / "ingestd.log", **_ingestd_env(central_db, port)
    )
    # A second replica whose operator no longer supports this release (a version far above it).
    strict = await _start(
        "ingestd",
        "serve",
        log=tmp_path / "ingestd-strict.log",
        **_ingestd_env(central_db, strict_port, INGESTD_MIN_PUSHER_VERSION="999.0"),
    )
    pushers: dict[str, asyncio.subprocess.Process] = {}
    blocker: psycopg.Connection[Any] | None = None
    try:
        async with _skewed_front(port, timedelta(minutes=10)) as front:
            for code in GATEWAYS:
                target = front if code == "CLOCK" else port
                pushers[code] = await _start(
                    "pusher",
                    "run",
                    log=tmp_path / f"pusher-{code}.log",
                    PUSHER_PUSH_ENABLED="true",
                    PUSHER_DATABASE_URL=dbs[code],
                    PUSHER_INGEST_URL=f"http://127.0.0.1:{target}",
                    PUSHER_TOKEN=tokens[code],
                    PUSHER_PUSH_INTERVAL_S=str(INTERVAL_S),
                    PUSHER_HEALTH_INTERVAL_S=str(INTERVAL_S),
                    PUSHER_BLOCKING_TXN_WARN_S="0.5",
                    PUSHER_BACKOFF_BASE_S="0.1",
                    PUSHER_BACKOFF_CAP_S="1",
                    PUSHER_LOG_FORMAT="json",
                )
            started = time.monotonic()
            alive = {**pushers, "ingestd": ingestd}
            for code in GATEWAYS:  # processes started, first answers seen, first reports sent
                await _until(port, code, "", timeout_s=120, alive=alive)
            took = {
                "all_reporting": time.monotonic() - started,
                "quarantine": await _until(port, "QUAR", "quarantine", alive=alive),
                "skewed_clock": await _until(port, "CLOCK", "skewed_clock", alive=alive),
                "ok": await _until(port, "STOP", "ok", alive=alive),
            }
            clock = next(g for g in _view(port)["gateways"] if g["customer"] == "CLOCK")
            assert 590 <= clock["clock_offset_s"] <= 610
            quar = next(g for g in _view(port)["gateways"] if g["customer"] == "QUAR")
            assert quar["quarantined_rows"] == 1
            took["old_version"] = await _until(strict_port, "STOP", "old_version")
            assert "old_version" not in _states(port)["STOP"]

            await _stop(pushers["STOP"])
            del alive["STOP"]
            took["silent"] = await _until(port, "STOP", "silent", alive=alive)
            assert "silent" not in _states(port)["QUAR"]

            blocker = psycopg.connect(dbs["BLOCK"], autocommit=False)
            blocker.execute("SELECT pg_current_xact_id()")  # holds every cursor of the cluster
            took["blocked"] = await _until(port, "BLOCK", "blocked", alive=alive)
            print("seconds until each state showed:", {k: round(v, 2) for k, v in took.items()})
            body = _view(port, "?state=blocked")
            assert "BLOCK" in {g["customer"] for g in body["gateways"]}
    finally:
        if blocker is not None:
            blocker.close()
        for proc in [*pushers.values(), ingestd, strict]:
            await _stop(proc)
