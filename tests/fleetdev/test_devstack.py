"""The README's main command: the local two-stack demo, run for a bounded time."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from fleetdev.pgcluster import PgCluster, timescaledb_installed
from fleetdev.simulator import REPLAYED_ROWS, MeterStack, replay_threshold, write_backlog


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
    on the storage path it was created with, even where TimescaleDB is installed since — and
    serves the read API with the admin token saved in the state folder."""
    state = state_root / "dev"
    cmd = [sys.executable, "-m", "fleetdev.devstack", "--state-dir", str(state), "--duration", "12",
           "--interval", "2", "--sim-interval", "1", "--push-interval", "1"]  # fmt: skip
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("INGESTD_", "PUSHER_", "FLEET_"))
    }
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

    # The second run's read API answers with the admin token the first one saved.
    admin_token_file = Path(saved["admin_token_file"])
    assert admin_token_file == state / "admin.token"
    assert admin_token_file.stat().st_mode & 0o077 == 0
    admin_token = admin_token_file.read_text().strip()
    assert len(admin_token) >= 32
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) as proc:  # fmt: skip
        assert proc.stdout is not None
        said = []
        answer = None
        for line in proc.stdout:  # the run ends by itself (--duration)
            said.append(line)
            if "read API: curl" in line and answer is None:
                request = urllib.request.Request(  # noqa: S310 (a loopback URL)
                    f"{saved['ingest_url']}/api/fleet/customers",
                    headers={"Authorization": f"Bearer {admin_token}"},
                )
                with urllib.request.urlopen(request, timeout=10) as resp:  # noqa: S310
                    answer = json.load(resp)
        stderr = proc.stderr.read() if proc.stderr else ""
    second_out = "".join(said)
    assert proc.returncode == 0, second_out + stderr
    assert answer is not None, second_out
    assert [c["code"] for c in answer["customers"]] == ["DEV0001"]
    assert "registered customer" not in second_out
    assert "central storage: postgresql" in second_out
    if timescaledb_installed():
        assert "`make clean && make dev` starts over on TimescaleDB" in second_out
    assert "Traceback" not in second_out + stderr
    assert (state / "DEV0001.token").stat().st_mode & 0o077 == 0


def test_replayed_count_matches_what_the_simulator_says(pg_cluster: PgCluster) -> None:
    """The status line's replayed count (REPLAYED_ROWS) equals the sum of the simulator's own
    "replayed N" lines: both count the rows sampled while offline."""
    dsn = pg_cluster.create_database("sim_replay")
    subprocess.run([sys.executable, "-m", "pusher", "migrate"], env={"PUSHER_DATABASE_URL": dsn, "PATH": "/usr/bin:/bin"},
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
    subprocess.run([sys.executable, "-m", "pusher", "migrate"], env={"PUSHER_DATABASE_URL": dsn, "PATH": "/usr/bin:/bin"},
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


def test_a_restarted_simulator_counts_its_registers_on(pg_cluster: PgCluster) -> None:
    """A second simulator run (a second `make dev`) continues every meter's energy registers from
    its latest stored sample, at the same load: no false register reset, which the energy answers
    would count as the whole register's value in one hour."""
    dsn = pg_cluster.create_database("sim_restart")
    subprocess.run([sys.executable, "-m", "pusher", "migrate"], env={"PUSHER_DATABASE_URL": dsn, "PATH": "/usr/bin:/bin"},
                   check=True, capture_output=True, timeout=60)  # fmt: skip
    start = datetime.now(UTC)
    first = MeterStack(dsn, sites=1, devices_per_site=2)
    first.install()
    for n in range(3):
        first.tick(start + timedelta(seconds=n), 1.0, online=True)
    second = MeterStack(dsn, sites=1, devices_per_site=2)
    second.install()
    assert [m.base_kw for m in second.meters] == [m.base_kw for m in first.meters]
    second.tick(start + timedelta(seconds=60), 1.0, online=True)
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            """SELECT device_id, energy_imp_kwh - lag(energy_imp_kwh) OVER w,
                      energy_q_imp_kvarh - lag(energy_q_imp_kvarh) OVER w,
                      energy_exp_kwh - lag(energy_exp_kwh) OVER w
               FROM monitoring.power_measurements WINDOW w AS (PARTITION BY device_id ORDER BY time)
               ORDER BY device_id, time"""
        ).fetchall()
    steps = [row[1:] for row in rows if row[1] is not None]
    assert len(steps) == 2 * 3
    # Each step is one reading's worth (at most 60 kW x 1.05 for 1 s), never negative.
    assert all(0 < imp < 0.02 and 0 <= q_imp < 0.02 and exp == 0 for imp, q_imp, exp in steps), (
        steps
    )
