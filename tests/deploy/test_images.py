"""Each image's commands, run outside a container from a virtualenv built as its Dockerfile builds
it (tests/deploy/dockerfile.py), with the image's environment and nothing from the checkout."""

from __future__ import annotations

import subprocess
import time
import urllib.request
from pathlib import Path

import psycopg
from fleetdev.pgcluster import free_port

from tests.deploy.dockerfile import BuiltImage


def _run(image: BuiltImage, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        image.command(*args),
        env=image.environment(**env),
        cwd=image.root,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_image_venvs_hold_installed_wheels_not_the_checkout(
    ingestd_image: BuiltImage, pusher_image: BuiltImage
) -> None:
    """The services are installed as wheels: their code imports from the image's site-packages."""
    for image, module in ((ingestd_image, "ingestd"), (pusher_image, "pusher")):
        probe = subprocess.run(
            [str(image.root / ".venv/bin/python"), "-c", f"import {module}; print({module}.__file__)"],
            env=image.environment(), cwd=image.root, capture_output=True, text=True, check=True,
        )  # fmt: skip
        assert "site-packages" in probe.stdout and "/services/" not in probe.stdout


def test_ingestd_image_migrates_an_empty_database(
    ingestd_image: BuiltImage, empty_central_db: str
) -> None:
    """`ingestd migrate` from the image applies every migration shipped in it and bootstraps storage."""
    result = _run(ingestd_image, "migrate", INGESTD_DATABASE_URL=empty_central_db)
    assert result.returncode == 0, result.stderr
    assert (
        "\napplied " in f"\n{result.stdout}" and "applied 0 " not in result.stdout
    )  # after the logs
    assert "storage:" in result.stdout
    again = _run(ingestd_image, "migrate", INGESTD_DATABASE_URL=empty_central_db)
    assert again.returncode == 0 and "applied 0 migration(s)" in again.stdout


def test_ingestd_image_serves_and_its_healthcheck_follows(
    ingestd_image: BuiltImage, empty_central_db: str, tmp_path: Path
) -> None:
    """The default CMD serves; the HEALTHCHECK one-liner passes while it runs and fails once it stops."""
    assert _run(ingestd_image, "migrate", INGESTD_DATABASE_URL=empty_central_db).returncode == 0
    port = str(free_port())
    env = ingestd_image.environment(
        INGESTD_DATABASE_URL=empty_central_db, INGESTD_HOST="127.0.0.1", INGESTD_PORT=port
    )
    log = tmp_path / "ingestd.log"
    with log.open("wb") as out:
        server = subprocess.Popen(
            ingestd_image.command(), env=env, cwd=ingestd_image.root, stdout=out, stderr=out
        )
    try:
        deadline = time.monotonic() + 20
        while True:
            check = subprocess.run(
                ingestd_image.healthcheck_command(), env=env, capture_output=True
            )
            if check.returncode == 0:
                break
            assert server.poll() is None, log.read_text()
            assert time.monotonic() < deadline, check.stderr
            time.sleep(0.2)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as resp:
            assert resp.status == 200
    finally:
        server.terminate()
        server.wait(timeout=20)
    after = subprocess.run(ingestd_image.healthcheck_command(), env=env, capture_output=True)
    assert after.returncode != 0


def test_ingestd_image_refuses_to_start_without_a_database_url(ingestd_image: BuiltImage) -> None:
    """The image started without INGESTD_DATABASE_URL stops at once, naming the variable."""
    result = _run(ingestd_image)
    assert result.returncode == 2
    assert "INGESTD_DATABASE_URL is required" in result.stderr


def test_pusher_image_check_names_a_bad_setting(pusher_image: BuiltImage) -> None:
    """`pusher check` (the unit's ExecStartPre) exits non-zero and names the malformed variable."""
    result = _run(
        pusher_image, "check",
        PUSHER_DATABASE_URL="postgresql://nobody@127.0.0.1:1/none",
        PUSHER_PUSH_ENABLED="true",
        PUSHER_INGEST_URL="ftp://ingest.example.com",
    )  # fmt: skip
    assert result.returncode == 2
    assert "PUSHER_INGEST_URL must be an http(s):// URL" in result.stderr


def test_pusher_image_check_reports_an_unmigrated_database(
    pusher_image: BuiltImage, empty_customer_db: str
) -> None:
    """`pusher check` fails on a customer database whose migrations are pending, and says what to run."""
    result = _run(pusher_image, "check", PUSHER_DATABASE_URL=empty_customer_db)
    assert result.returncode == 1
    assert "pending migrations" in result.stderr and "pusher migrate" in result.stderr


def test_pusher_image_migrates_then_healthcheck_and_default_cmd_pass(
    pusher_image: BuiltImage, simulator_image: BuiltImage, empty_customer_db: str
) -> None:
    """migrate, the simulator writing readings, the HEALTHCHECK (`pusher status`) and `run` with push off all succeed."""
    migrate = _run(pusher_image, "migrate", PUSHER_DATABASE_URL=empty_customer_db)
    assert migrate.returncode == 0, migrate.stderr
    assert _run(pusher_image, "check", PUSHER_DATABASE_URL=empty_customer_db).returncode == 0

    simulate = subprocess.run(
        simulator_image.command("--database-url", empty_customer_db, "--sites", "1", "--devices", "2",
                                "--interval", "0.2", "--duration", "1"),
        env=simulator_image.environment(SIMULATOR_DATABASE_URL=empty_customer_db),
        cwd=simulator_image.root, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert simulate.returncode == 0, simulate.stderr
    with psycopg.connect(empty_customer_db) as conn:
        cur = conn.execute("SELECT count(*) FROM monitoring.power_measurements")
        assert (cur.fetchone() or (0,))[0] > 0

    health = subprocess.run(
        pusher_image.healthcheck_command(),
        env=pusher_image.environment(PUSHER_DATABASE_URL=empty_customer_db),
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert health.returncode == 0, health.stderr
    sim_health = subprocess.run(
        simulator_image.healthcheck_command(),
        env=simulator_image.environment(SIMULATOR_DATABASE_URL=empty_customer_db),
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert sim_health.returncode == 0, sim_health.stderr

    idle = _run(pusher_image, PUSHER_DATABASE_URL=empty_customer_db)  # CMD ["run"], push disabled
    assert idle.returncode == 0
