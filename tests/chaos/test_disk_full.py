"""Full disks, central and on the gateway, while meters write and the pusher pushes.

- The central database's data volume fills: inserts fail with `disk_full`; ingestd answers 503
  with Retry-After, acknowledges nothing it did not store, and goes on by itself once space is
  back. Its WAL volume fills: PostgreSQL stops (a PANIC); ingestd answers 503 until it is back.
- The customer database's volumes fill: the meters' writes and the pusher's state writes fail;
  the cursor never passes what ingestd acknowledged, and pushing resumes once space is back.
- The pusher's own output (its log) cannot be written: it keeps pushing.

Each scenario puts the database's data folder and pg_wal on small tmpfs volumes of its own
(`volume.py`: root only, skipped elsewhere) and ends with the exactly-once check.
"""

from __future__ import annotations

import contextlib
import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fleetdev.pgcluster import PgCluster, free_port, temporary_cluster
from pusher.migrate import apply_migrations as migrate_customer

from tests.chaos.figures import FIGURES
from tests.chaos.stack import ChaosStack, migrate_central_database, pusher_daemon
from tests.chaos.volume import SmallVolume, cluster_on_volumes, need_new_wal_segments

FULL_S = 4.0


@contextlib.contextmanager
def central_on_volumes(tmp: Path) -> Iterator[tuple[ChaosStack, SmallVolume, SmallVolume]]:
    """A chaos stack whose central database lives on small volumes."""
    with (
        cluster_on_volumes(data_mb=160, wal_mb=128, synchronous_commit="on") as (
            central,
            data,
            wal,
        ),
        temporary_cluster(prefix="fleet-chaos-customer-", synchronous_commit="on") as customer,
    ):
        central_dsn = central.create_database("fleet")
        migrate_central_database(central_dsn)
        customer_dsn = customer.create_database("meters")
        migrate_customer(customer_dsn)
        with ChaosStack.around(tmp, central, central_dsn, customer, customer_dsn) as stack:
            yield stack, data, wal


@contextlib.contextmanager
def customer_on_volumes(tmp: Path) -> Iterator[tuple[ChaosStack, SmallVolume, SmallVolume]]:
    """A chaos stack whose customer database lives on small volumes."""
    with (
        temporary_cluster(prefix="fleet-chaos-central-", synchronous_commit="on") as central,
        cluster_on_volumes(data_mb=128, wal_mb=128, synchronous_commit="on") as (
            customer,
            data,
            wal,
        ),
    ):
        central_dsn = central.create_database("fleet")
        migrate_central_database(central_dsn)
        customer_dsn = customer.create_database("meters")
        migrate_customer(customer_dsn)
        with ChaosStack.around(tmp, central, central_dsn, customer, customer_dsn) as stack:
            yield stack, data, wal


def _statuses(lines: list[dict[str, Any]]) -> set[int]:
    return {
        line["status"]
        for line in lines
        if isinstance(line.get("status"), int) and line["status"] != 200
    }


def _wait_delivered(stack: ChaosStack, timeout_s: float = 30.0) -> None:
    assert stack.pusher is not None
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if any(line.get("event") == "batch_delivered" for line in stack.pusher.json_lines()):
            return
        time.sleep(0.2)
    raise AssertionError("nothing delivered before the fault")


def _restart_if_down(cluster: PgCluster) -> bool:
    """What a supervisor (systemd, Kubernetes) does: start PostgreSQL again if it stopped."""
    if cluster.running:
        return False
    cluster.start()
    return True


@pytest.mark.long
@pytest.mark.parametrize("volume", ["data", "wal"])
def test_central_database_disk_full(tmp_path: Path, volume: str) -> None:
    """The central data (or WAL) volume fills for a few seconds: the pusher sees only 503s
    (with Retry-After), nothing it was told is stored is missing, ingestd is never restarted,
    and once space is back every row arrives exactly once."""
    with central_on_volumes(tmp_path) as (stack, data, wal):
        ingestd = stack.start_ingestd()
        stack.start_writers(threads=2)
        pusher = stack.start_pusher()
        _wait_delivered(stack)
        full = data if volume == "data" else wal
        full.fill()
        FIGURES.fault(f"central_{volume}_volume_full")
        if volume == "wal":
            need_new_wal_segments(stack.central)
        time.sleep(FULL_S)
        statuses_while_full = _statuses(pusher.json_lines())
        direct = _post_backfill(stack, stack.writers.meters[0].device_id) if stack.writers else None
        full.free()
        restarted = _restart_if_down(stack.central)
        FIGURES.notes.append(f"central {volume} volume full: a direct back-fill answered {direct}")
        report = stack.drain_and_check(f"central {volume} volume full", timeout_s=60)
        FIGURES.notes.append(
            f"central {volume} volume full {FULL_S:.0f}s: pusher saw {sorted(statuses_while_full)}"
            f", PostgreSQL restarted {restarted}, {report.summary()}"
        )
        assert ingestd.alive and ingestd.starts == 1, "ingestd recovered by itself"
        assert pusher.alive and pusher.starts == 1
        assert statuses_while_full <= {503}, statuses_while_full
        assert 503 in statuses_while_full, "the full disk was noticed"
        assert direct is not None and direct[0] == 503 and direct[1], f"answered {direct}"


@pytest.mark.long
@pytest.mark.parametrize("volume", ["data", "wal"])
def test_customer_database_disk_full(tmp_path: Path, volume: str) -> None:
    """The customer's data (or WAL) volume fills for a few seconds: meters and the pusher's
    state writes fail, the pusher keeps running and never moves its cursor past what ingestd
    acknowledged, and once space is back every committed row arrives exactly once."""
    with customer_on_volumes(tmp_path) as (stack, data, wal):
        stack.start_ingestd()
        stack.start_writers(threads=2)
        pusher = stack.start_pusher()
        _wait_delivered(stack)
        full = data if volume == "data" else wal
        full.fill()
        FIGURES.fault(f"customer_{volume}_volume_full")
        if volume == "wal":
            need_new_wal_segments(stack.customer)
        time.sleep(FULL_S)
        full.free()
        restarted = _restart_if_down(stack.customer)
        report = stack.drain_and_check(f"customer {volume} volume full", timeout_s=60)
        FIGURES.notes.append(
            f"customer {volume} volume full {FULL_S:.0f}s: PostgreSQL restarted {restarted}, "
            f"{report.summary()}"
        )
        assert pusher.alive and pusher.starts == 1, "the pusher kept running"


def _scrape(port: int, name: str) -> float:
    url = f"http://127.0.0.1:{port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as resp:
        text = resp.read().decode()
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " "))


BACKFILL_ROWS = 300
INSERT_BACKFILL = """
INSERT INTO monitoring.power_measurements (device_id, time, received_at, v1)
VALUES (%s, %s, %s, 230.0)
"""


def _post_backfill(stack: ChaosStack, device_id: int) -> tuple[int, str | None]:
    """POST a back-fill of an hour-old minute straight to ingestd (more rows than a page with
    room left can take), then commit the same rows in the customer database, so the pusher
    ships them too and the exactly-once check holds whatever ingestd answered here (an answer
    can be lost after a commit). Returns the status and Retry-After."""
    received = datetime.now(UTC)
    start = received.replace(microsecond=0) - timedelta(hours=1)
    times = [start + timedelta(milliseconds=200 * n) for n in range(BACKFILL_ROWS)]
    items = [
        {
            "device_id": device_id,
            "time": t.isoformat(),
            "received_at": received.isoformat(),
            "v1": 230.0,
        }
        for t in times
    ]
    request = urllib.request.Request(  # noqa: S310 - loopback URL of this test's own ingestd
        stack.ingestd_url + "/api/fleet/ingest",
        data=json.dumps({"items": items}).encode(),
        method="POST",
        headers={
            "X-Customer-Token": stack.token,
            "X-Batch-Type": "measurements",
            "Content-Type": "application/json",
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:  # noqa: S310
            answer = resp.status, resp.headers.get("Retry-After")
    except urllib.error.HTTPError as exc:
        answer = exc.code, exc.headers.get("Retry-After")
    with (
        psycopg.connect(stack.customer_dsn, autocommit=True) as conn,
        conn.transaction(),
        conn.cursor() as cur,
    ):
        cur.executemany(INSERT_BACKFILL, [(device_id, t, received) for t in times])
    return answer


@pytest.mark.long
def test_pusher_output_unwritable(tmp_path: Path) -> None:
    """The pusher's stdout is a full device (every write fails with ENOSPC): it keeps pushing,
    counts the dropped lines in fleet_pusher_log_write_errors_total, and every row arrives
    exactly once."""
    with ChaosStack.create(tmp_path) as stack:
        stack.start_ingestd()
        stack.start_writers(threads=2)
        port = free_port()
        pusher = stack.pusher = pusher_daemon(
            Path("/dev/full"),
            stack.customer_dsn,
            stack.ingestd_url,
            stack.token,
            PUSHER_METRICS_PORT=str(port),
        )
        pusher.start()
        FIGURES.fault("pusher_stdout_full")
        time.sleep(FULL_S)
        alive = pusher.alive
        dropped = _scrape(port, "fleet_pusher_log_write_errors_total")
        pusher.log = tmp_path / "pusher-unread.log"  # /dev/full reads as endless zeros
        report = stack.drain_and_check("pusher output unwritable", timeout_s=30)
        assert alive and pusher.starts == 1, "the pusher kept running with its output full"
        assert dropped > 0, "the dropped log lines are counted"
        assert report.arrived > 0
