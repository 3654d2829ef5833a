"""The README's main command: the local two-stack demo, run for a bounded time."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from fleetdev.pgcluster import PgCluster, timescaledb_installed
from fleetdev.simulator import REPLAYED_ROWS, replay_threshold, write_backlog


@pytest.fixture
def state_root() -> Iterator[Path]:
    """A temporary folder the postgres user can reach (pytest's tmp_path is private to root)."""
    root = Path(tempfile.mkdtemp(prefix="fleet-devstack-"))
    root.chmod(0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


def test_two_stack_demo_moves_rows_and_reuses_its_state(state_root: Path) -> None:
    """`python -m fleetdev.devstack` brings up both stacks, rows arrive centrally, URLs and every
    log (PostgreSQL's too) are kept under the state folder, and a second run reuses the state —
    on the storage path it was created with, even where TimescaleDB is installed since."""
    state = state_root / "dev"
    cmd = [sys.executable, "-m", "fleetdev.devstack", "--state-dir", str(state), "--duration", "12",
           "--interval", "2", "--sim-interval", "1", "--push-interval", "1"]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith(("INGESTD_", "FLEET_"))}
    # As if TimescaleDB was installed only after this first run:
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=False,
                           env={**env, "INGESTD_TIMESCALEDB": "off"})  # fmt: skip
    assert first.returncode == 0, first.stdout + first.stderr
    assert "registered customer DEV0001" in first.stdout
    last_line = first.stdout.strip().splitlines()[-1]
    assert "rows arrived centrally" in last_line
    arrived = int(last_line.split("stopped; ")[1].split()[0])
    assert arrived > 0
    saved = json.loads((state / "stack.json").read_text())
    assert saved["central_storage"] == "postgresql"
    assert saved["central_url"] == f"postgresql://fleet@127.0.0.1:{saved['central_port']}/fleet"
    assert f"central stack   {saved['central_url']}" in first.stdout
    assert saved["ingest_url"] == f"http://127.0.0.1:{saved['ingest_port']}"
    logs = {p.name for p in (state / "logs").iterdir() if p.stat().st_size > 0}
    assert {
        "ingestd.log",
        "pusher.log",
        "customer-postgresql.log",
        "central-postgresql.log",
    } <= logs

    second = subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=False, env=env)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "registered customer" not in second.stdout
    assert "central storage: postgresql" in second.stdout
    if timescaledb_installed():
        assert "`make clean && make dev` starts over on TimescaleDB" in second.stdout
    assert "Traceback" not in second.stdout + second.stderr
    assert (state / "DEV0001.token").stat().st_mode & 0o077 == 0


def test_replayed_count_matches_what_the_simulator_says(pg_cluster: PgCluster) -> None:
    """The status line's replayed count (REPLAYED_ROWS) equals the sum of the simulator's own
    "replayed N" lines: both count the rows sampled while offline."""
    dsn = pg_cluster.create_database("sim_replay")
    subprocess.run([sys.executable, "-m", "pusher", "migrate"], env={"FLEET_DATABASE_URL": dsn, "PATH": "/usr/bin:/bin"},
                   check=True, capture_output=True, timeout=60)  # fmt: skip
    sim = subprocess.run(
        [sys.executable, "-m", "fleetdev.simulator", "--database-url", dsn, "--sites", "1",
         "--devices", "2", "--interval", "1", "--offline-every", "4", "--offline-for", "2",
         "--duration", "9.5"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    said = [int(line.split("replayed ")[1].split()[0]) for line in sim.stdout.splitlines()]
    assert len(said) == 2 and all(n > 0 for n in said), sim.stdout
    with psycopg.connect(dsn) as conn:
        (counted,) = conn.execute(REPLAYED_ROWS, {"threshold": replay_threshold(1)}).fetchone()  # type: ignore[misc]
    assert counted == sum(said)


def test_backlog_generator_writes_the_rows_it_reports(pg_cluster: PgCluster) -> None:
    """`--backlog N` writes about N plausible rows into the meter stack's table, fast."""
    dsn = pg_cluster.create_database("sim_backlog")
    subprocess.run([sys.executable, "-m", "pusher", "migrate"], env={"FLEET_DATABASE_URL": dsn, "PATH": "/usr/bin:/bin"},
                   check=True, capture_output=True, timeout=60)  # fmt: skip
    written = write_backlog(dsn, 10_000, days=2)
    with psycopg.connect(dsn) as conn:
        count, devices, bad = conn.execute(
            """SELECT count(*), count(DISTINCT device_id),
                      count(*) FILTER (WHERE v1 NOT BETWEEN 200 AND 260 OR pf_total NOT BETWEEN -1 AND 1)
               FROM monitoring.power_measurements"""
        ).fetchone()  # type: ignore[misc]
    assert written == count >= 10_000
    assert devices == 8
    assert bad == 0


def test_central_timescale_without_docker_engine_says_so(tmp_path: Path) -> None:
    """`make dev CENTRAL=timescale` on a machine with no Docker engine says so and falls back."""
    from fleetdev.dockercentral import central_container

    said: list[str] = []
    env_backup = os.environ.get("DOCKER_HOST")
    os.environ["DOCKER_HOST"] = f"unix://{tmp_path}/no-engine.sock"
    try:
        assert central_container(5432, tmp_path / "pw", said.append) is None
    finally:
        if env_backup is None:
            del os.environ["DOCKER_HOST"]
        else:
            os.environ["DOCKER_HOST"] = env_backup
    assert said and "using the local PostgreSQL binaries" in said[0]
    assert not (tmp_path / "pw").exists()
