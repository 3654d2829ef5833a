"""The images, built by a real container engine and run as containers: ingestd migrates and serves,
the pusher ships a customer database's rows to it exactly once (`make images-test`)."""

from __future__ import annotations

import time
from importlib.metadata import version

import psycopg
import pytest
from fleetdev.pgcluster import free_port

from tests.deploy.containers import Images, wait_http
from tests.deploy.dockerfile import REPO
from tests.fix_customer import seed_inventory, seed_measurements
from tests.fix_ingestd import central_count
from tests.fix_pg import scalar

pytestmark = pytest.mark.containers
VERSION = (REPO / "VERSION").read_text().strip()  # what the wheels in the images are built with


def _register(images: Images, central_db: str, code: str) -> str:
    added = images.run(
        "ingestd", "customers", "add", code, env={"INGESTD_DATABASE_URL": central_db}
    )
    assert added.returncode == 0, added.stderr
    return added.stdout.strip()


def _wait_rows(central_db: str, expected: int, timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while (count := central_count(central_db)) < expected:
        assert time.monotonic() < deadline, f"{count} of {expected} rows arrived centrally"
        time.sleep(0.5)


def test_images_report_the_wheels_version(images: Images) -> None:
    """`--version` of each image prints VERSION, the version its fleet-* wheels were built with."""
    for name in ("ingestd", "pusher"):
        shown = images.run(name, "--version")
        assert shown.returncode == 0, shown.stderr
        assert shown.stdout.strip() == f"{name} {VERSION}" == f"{name} {version(f'fleet-{name}')}"


def test_ingestd_container_migrates_serves_and_passes_its_healthcheck(
    images: Images, empty_central_db: str
) -> None:
    """`migrate` then `serve` from the image: /readyz answers 200, the HEALTHCHECK passes, the
    process is uid 10001 and cannot write to its root filesystem."""
    env = {"INGESTD_DATABASE_URL": empty_central_db}
    migrate = images.run("ingestd", "migrate", env=env)
    assert migrate.returncode == 0, migrate.stderr
    assert "applied " in migrate.stdout and "applied 0 " not in migrate.stdout
    port = free_port()
    serve_env = {**env, "INGESTD_HOST": "127.0.0.1", "INGESTD_PORT": str(port)}
    with images.started("ingestd", env=serve_env) as container:
        assert wait_http(f"http://127.0.0.1:{port}/readyz") == 200
        health = images.healthcheck(container)
        assert health.returncode == 0, health.stdout + health.stderr
        uid = images.engine.run("exec", container, "id", "-u").stdout.strip()
        assert uid == "10001"
        write = images.engine.run("exec", container, "touch", "/app/probe", check=False)
        assert write.returncode != 0 and "Read-only file system" in write.stderr
        read_only = images.engine.run(
            "inspect", "--format", "{{.HostConfig.ReadonlyRootfs}}", container
        ).stdout.strip()
        assert read_only == "true"


def test_pusher_container_ships_customer_rows_exactly_once(
    images: Images, empty_central_db: str, empty_customer_db: str
) -> None:
    """The pusher image migrates the customer database, `check` passes against the ingestd
    container, and `run` ships every row once, also across a restart of the container."""
    assert (
        images.run("ingestd", "migrate", env={"INGESTD_DATABASE_URL": empty_central_db}).returncode
        == 0
    )
    token = _register(images, empty_central_db, "IMG0001")
    migrate = images.run("pusher", "migrate", env={"PUSHER_DATABASE_URL": empty_customer_db})
    assert migrate.returncode == 0, migrate.stderr
    seed_inventory(empty_customer_db, sites=1, devices=3)
    first = seed_measurements(empty_customer_db, devices=3, stop=400)

    port = free_port()
    ingestd_env = {
        "INGESTD_DATABASE_URL": empty_central_db,
        "INGESTD_HOST": "127.0.0.1",
        "INGESTD_PORT": str(port),
    }
    pusher_env = {
        "PUSHER_DATABASE_URL": empty_customer_db,
        "PUSHER_PUSH_ENABLED": "true",
        "PUSHER_INGEST_URL": f"http://127.0.0.1:{port}",
        "PUSHER_TOKEN": token,
        "PUSHER_PUSH_INTERVAL_S": "0.5",
        "PUSHER_BATCH_SIZE": "500",
    }
    with images.started("ingestd", env=ingestd_env, label="ingestd-for-pusher"):
        assert wait_http(f"http://127.0.0.1:{port}/readyz") == 200
        check = images.run("pusher", "check", env=pusher_env)
        assert check.returncode == 0, check.stdout + check.stderr
        with images.started("pusher", env=pusher_env) as pusher:
            _wait_rows(empty_central_db, first)
            health = images.healthcheck(pusher)
            assert health.returncode == 0, health.stdout + health.stderr
            stopped = images.engine.run("stop", "-t", "20", pusher, timeout=60)
            assert stopped.returncode == 0
            exit_code = images.engine.run("inspect", "--format", "{{.State.ExitCode}}", pusher)
            assert exit_code.stdout.strip() == "0"
        more = seed_measurements(empty_customer_db, devices=3, start=400, stop=500)
        with images.started("pusher", env=pusher_env, label="pusher-restarted"):
            _wait_rows(empty_central_db, first + more)
            time.sleep(2)  # a few more ticks: nothing may be sent twice
    assert central_count(empty_central_db) == first + more
    with psycopg.connect(empty_customer_db) as conn:
        customer_rows = conn.execute(
            "SELECT count(*) FROM monitoring.power_measurements"
        ).fetchone()
    assert customer_rows == (first + more,)
    duplicates = scalar(
        empty_central_db,
        "SELECT count(*) FROM (SELECT device_id, time FROM fleet.power_measurements "
        "GROUP BY device_id, time HAVING count(*) > 1) AS d",
    )
    assert duplicates == 0
