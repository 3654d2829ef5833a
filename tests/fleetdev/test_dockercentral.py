"""`make dev CENTRAL=timescale`'s Docker SDK path, for real: against podman's Docker-compatible
API (`podman system service`), with the central database image configurable."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from fleetdev.dockercentral import IMAGE, STANDIN_IMAGE, central_container
from fleetdev.engine import Engine, EngineMissing, find_engine
from fleetdev.pgcluster import free_port
from fleetdev.standin import ensure_postgres_standin

from tests.fix_pg import migrate_central

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.containers


@pytest.fixture(scope="module")
def podman() -> Engine:
    """podman (installed when missing and running as root with apt-get), else skip saying why."""
    install = os.geteuid() == 0 and shutil.which("apt-get") is not None
    try:
        engine = find_engine(REPO / ".state", install=install, say=print)
    except EngineMissing as exc:
        pytest.skip(f"no container engine here: {exc}")
    if engine.name != "podman":
        pytest.skip("the Docker-compatible socket under test is podman's (docker found instead)")
    return engine


@pytest.fixture(scope="module")
def standin_image(podman: Engine) -> str:
    """The stand-in central database image, built once (Debian's PostgreSQL 15)."""
    try:
        return ensure_postgres_standin(podman, REPO, REPO / ".state", print)
    except (EngineMissing, subprocess.CalledProcessError) as exc:
        pytest.skip(f"the stand-in central image cannot be built here: {exc}")


@pytest.fixture
def podman_socket(podman: Engine, tmp_path: Path) -> Iterator[str]:
    """`podman system service` on a socket of this test; DOCKER_HOST points at it meanwhile."""
    socket = tmp_path / "podman.sock"
    service = subprocess.Popen(
        podman.argv("system", "service", "--time=0", f"unix://{socket}"),
        env=podman.environ(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while not socket.exists():
        assert service.poll() is None and time.monotonic() < deadline, (
            "podman service did not start"
        )
        time.sleep(0.1)
    previous = os.environ.get("DOCKER_HOST")
    os.environ["DOCKER_HOST"] = f"unix://{socket}"
    try:
        yield os.environ["DOCKER_HOST"]
    finally:
        if previous is None:
            del os.environ["DOCKER_HOST"]
        else:
            os.environ["DOCKER_HOST"] = previous
        service.terminate()
        service.wait(timeout=20)


@contextlib.contextmanager
def _removed_after(podman: Engine, name: str, volume: str) -> Iterator[None]:
    try:
        yield
    finally:
        podman.run("rm", "-f", "-t", "5", name, check=False)
        podman.run("volume", "rm", "-f", volume, check=False)


def test_central_container_runs_the_configured_image_through_podmans_docker_api(
    podman: Engine, standin_image: str, podman_socket: str, tmp_path: Path
) -> None:
    """CENTRAL_IMAGE names the image; the container serves PostgreSQL on the published port,
    ingestd's migrations apply to it, and a second start reuses the container, volume and password."""
    name, volume = f"fleet-test-central-{os.getpid()}", f"fleet-test-central-{os.getpid()}"
    said: list[str] = []
    port = free_port()
    with _removed_after(podman, name, volume):
        central = central_container(
            port, tmp_path / "pw", said.append, image=standin_image, name=name, volume=volume
        )
        assert central is not None, said
        with psycopg.connect(central.dsn) as conn:
            row = conn.execute("SHOW server_version").fetchone()
        assert row is not None and row[0].startswith("15.")
        migrate_central(central.dsn, timescaledb="off")
        with psycopg.connect(central.dsn) as conn:
            conn.execute("INSERT INTO fleet.customers (code) VALUES ('KEEP01')")
        central.stop()

        again = central_container(port, tmp_path / "pw", said.append, name=name, volume=volume)
        assert again is not None and again.password == central.password
        with psycopg.connect(again.dsn) as conn:
            kept = conn.execute("SELECT count(*) FROM fleet.customers WHERE code = 'KEEP01'")
            assert kept.fetchone() == (1,)
        again.stop()
    assert any(f"starting {standin_image}" in line for line in said)
    assert any(line.startswith(f"restarting {name}") for line in said)


def test_unpullable_timescale_image_falls_back_to_the_built_standin(
    podman: Engine, standin_image: str, podman_socket: str, tmp_path: Path
) -> None:
    """Where the TimescaleDB image cannot be pulled, the local stand-in runs instead, saying so;
    an unpullable image of the developer's own choice falls back to the local binaries."""
    name, volume = f"fleet-test-central2-{os.getpid()}", f"fleet-test-central2-{os.getpid()}"
    said: list[str] = []
    with _removed_after(podman, name, volume):
        if podman.image_exists(IMAGE):
            pytest.skip(f"{IMAGE} is present here: nothing to fall back from")
        central = central_container(
            free_port(), tmp_path / "pw", said.append, image=IMAGE, name=name, volume=volume
        )
        assert central is not None, said
        central.stop()
    assert any(f"{IMAGE} cannot be pulled" in line for line in said)
    assert any(f"using the local stand-in {STANDIN_IMAGE}" in line for line in said)

    said.clear()
    missing = "localhost/fleet-test/no-such-image:1"
    gone = central_container(
        free_port(), tmp_path / "pw2", said.append, image=missing, name=f"{name}-x", volume=volume
    )
    assert gone is None
    assert any(f"{missing} cannot be pulled" in line for line in said)
    assert said[-1].endswith("using the local PostgreSQL binaries")
