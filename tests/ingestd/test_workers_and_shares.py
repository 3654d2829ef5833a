"""INGESTD_WORKERS (several processes on one port) and limits shared out across processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import replace
from pathlib import Path
from typing import Any

import psycopg
import pytest
from aiohttp.test_utils import TestClient, TestServer
from fleetdev.pgcluster import free_port
from ingestd.app import INGEST_PATH, SERVER_OPTIONS, create_app
from ingestd.customers import add_customer
from ingestd.settings import Settings

from tests.samples import encode, measurements


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat[stat.rindex(")") + 2 :].split()[1]) == pid:
                out.append(int(entry.name))
    return out


def _push(port: int, token: str) -> int:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{INGEST_PATH}",
        data=encode(measurements(3, start=None)),
        method="POST",
        headers={
            "X-Customer-Token": token,
            "X-Batch-Type": "measurements",
            "Content-Type": "application/json",
            "Content-Encoding": "gzip",
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:  # noqa: S310
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return 0


@pytest.fixture
def two_workers(central_db: str) -> Any:
    """`ingestd serve` with INGESTD_WORKERS=2 as a real process tree on a free port."""
    port = free_port()
    env = {
        **os.environ,
        "INGESTD_DATABASE_URL": central_db,
        "INGESTD_PORT": str(port),
        "INGESTD_WORKERS": "2",
        "INGESTD_LOG_FORMAT": "json",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "ingestd", "serve"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while len(_children(proc.pid)) < 2 or _push(port, "x") != 401:
            assert proc.poll() is None, "ingestd exited at start"
            assert time.monotonic() < deadline, "two workers did not come up"
            time.sleep(0.1)
        yield proc, port
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_two_workers_serve_one_port_and_stop_together(two_workers: Any, central_db: str) -> None:
    """Both workers accept on the same port (the kernel spreads connections); SIGTERM to the
    parent stops both and it exits 0."""
    proc, port = two_workers
    token = add_customer(central_db, "WORKERS1")
    assert [_push(port, token) for _ in range(6)] == [200] * 6
    workers = _children(proc.pid)
    assert len(workers) == 2
    with psycopg.connect(central_db) as conn:  # each worker runs the whole app: its own listener
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'ingestd-tokens'"
        ).fetchone()
    assert row == (2,)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    assert not any(Path(f"/proc/{pid}").exists() for pid in workers)


def test_a_worker_that_dies_takes_the_replica_down(two_workers: Any) -> None:
    """A worker killed on its own makes the parent stop the other and exit non-zero, so the
    supervisor restarts the whole replica rather than run it a core short."""
    proc, _ = two_workers
    workers = _children(proc.pid)
    os.kill(workers[0], signal.SIGKILL)
    assert proc.wait(30) != 0
    assert not Path(f"/proc/{workers[1]}").exists() or _children(proc.pid) == []


async def test_each_process_enforces_its_share_of_the_rate_limit(
    aiohttp_client: Any, ingestd_settings: Settings, customer_token: str
) -> None:
    """With INGESTD_REPLICAS=2 a burst of 10 per customer is 5 per process: the deployment-wide
    total holds whichever replica the balancer picks."""
    settings = replace(ingestd_settings, rate_limit_per_s=0.001, rate_limit_burst=10, replicas=2)
    server = TestServer(create_app(settings))
    await server.start_server(**SERVER_OPTIONS)
    client: TestClient[Any, Any] = await aiohttp_client(server)
    headers = {
        "X-Customer-Token": customer_token,
        "X-Batch-Type": "measurements",
        "Content-Type": "application/json",
        "Content-Encoding": "gzip",
    }
    statuses = [
        (await client.post(INGEST_PATH, data=encode(measurements(1)), headers=headers)).status
        for _ in range(7)
    ]
    assert statuses == [200] * 5 + [429] * 2
