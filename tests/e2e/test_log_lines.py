"""Every line both daemons print is a structured log line in JSON mode, with a stable event name.

Run as real processes, as an operator runs them: a failed start (database unreachable) and a
normal run (ingestd serving, the pusher shipping a backlog, then SIGTERM for both). A log shipper
reading their stdout must find one JSON object per line — the libraries' lines included — each
naming the service, and Fleet's own events in snake_case with their values as fields.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
from typing import Any

from fleetdev.pgcluster import free_port

from tests.fix_customer import seed_inventory, seed_measurements
from tests.fix_ingestd import central_count
from tests.fix_pg import wait_for

BASE = {k: v for k, v in os.environ.items() if not k.startswith(("INGESTD_", "PUSHER_", "FLEET_"))}
SNAKE = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+)*$")


async def _start(service: str, *args: str, **env: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", service, *args, env={**BASE, **env},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip


async def _stop(proc: asyncio.subprocess.Process) -> tuple[str, str]:
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    return out.decode(), err.decode()


def _parse(service: str, out: str, err: str) -> list[dict[str, Any]]:
    """Every line as JSON; fails naming the first line that is not a structured log line."""
    assert err == "", f"{service} wrote to stderr: {err[:500]}"
    lines = []
    for line in out.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            raise AssertionError(f"{service} printed a non-JSON line: {line[:300]}") from None
        assert isinstance(entry, dict) and entry["service"] == service, line
        assert {"event", "level", "logger", "timestamp"} <= entry.keys(), line
        if entry["logger"].split(".")[0] in {"ingestd", "pusher", "fleet"}:
            assert SNAKE.match(entry["event"]), f"{service} event is not snake_case: {line[:300]}"
        lines.append(entry)
    assert lines, f"{service} printed nothing"
    return lines


async def test_failed_start_prints_only_structured_lines() -> None:
    """With the database unreachable, ingestd's failed start and the pusher's retries are JSON
    lines (psycopg_pool's warnings included), the last of ingestd's being `start_failed`."""
    down = f"postgresql://fleet@127.0.0.1:{free_port()}/nothing"
    ingestd = await _start("ingestd", "serve", INGESTD_DATABASE_URL=down, INGESTD_PORT=str(free_port()),
                           INGESTD_CONNECT_TIMEOUT_S="1", INGESTD_LOG_FORMAT="json")  # fmt: skip
    pusher = await _start("pusher", "run", PUSHER_DATABASE_URL=down, PUSHER_PUSH_ENABLED="true",
                          PUSHER_INGEST_URL=f"http://127.0.0.1:{free_port()}", PUSHER_TOKEN="t0ken",
                          PUSHER_BACKOFF_BASE_S="0.2", PUSHER_BACKOFF_CAP_S="0.5",
                          PUSHER_LOG_FORMAT="json")  # fmt: skip
    assert await asyncio.wait_for(ingestd.wait(), 30) == 1
    await asyncio.sleep(2.0)
    ingestd_lines = _parse("ingestd", *(await _stop(ingestd)))
    pusher_lines = _parse("pusher", *(await _stop(pusher)))
    assert pusher.returncode == 0
    assert ingestd_lines[-1]["event"] == "start_failed"
    assert any(e["logger"] == "psycopg.pool" for e in ingestd_lines)
    unavailable = [e for e in pusher_lines if e["event"] == "customer_database_unavailable"]
    assert len(unavailable) >= 2 and "\n" not in unavailable[0]["error"]


async def test_normal_run_prints_only_structured_lines(central_db: str, customer_db: str,
                                                       customer_token: str) -> None:  # fmt: skip
    """ingestd serving and the pusher shipping a backlog print nothing but JSON lines with
    snake_case events, from start to SIGTERM."""
    seed_inventory(customer_db)
    expected = seed_measurements(customer_db, devices=4, stop=300)
    port = free_port()
    ingestd = await _start("ingestd", "serve", INGESTD_DATABASE_URL=central_db,
                           INGESTD_PORT=str(port), INGESTD_LOG_FORMAT="json")  # fmt: skip
    pusher = None
    try:
        await asyncio.sleep(1.0)
        pusher = await _start("pusher", "run", PUSHER_DATABASE_URL=customer_db,
                              PUSHER_PUSH_ENABLED="true", PUSHER_INGEST_URL=f"http://127.0.0.1:{port}",
                              PUSHER_TOKEN=customer_token, PUSHER_PUSH_INTERVAL_S="0.5",
                              PUSHER_BATCH_SIZE="500", PUSHER_BACKOFF_BASE_S="0.2",
                              PUSHER_BACKOFF_CAP_S="1", PUSHER_METRICS_PORT=str(free_port()),
                              PUSHER_LOG_FORMAT="json")  # fmt: skip
        await wait_for(lambda: central_count(central_db) == expected, what="all rows", timeout_s=60)
    finally:
        pusher_out = await _stop(pusher) if pusher is not None else ("", "")
        ingestd_out = await _stop(ingestd)
    pusher_events = [e["event"] for e in _parse("pusher", *pusher_out)]
    ingestd_events = [e["event"] for e in _parse("ingestd", *ingestd_out)]
    assert pusher_events[0] == "starting" and pusher_events[-1] == "stopped"
    assert {"connected", "metrics_listening", "batch_delivered"} <= set(pusher_events)
    assert "batch" in ingestd_events
