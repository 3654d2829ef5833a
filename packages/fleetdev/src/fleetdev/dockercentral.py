"""The central database of `make dev CENTRAL=timescale`: the TimescaleDB image, through Docker.

Production runs the central database on TimescaleDB (`timescale/timescaledb-ha`). Where a Docker
engine is reachable, the dev stack can run that image instead of the local PostgreSQL binaries, so
a developer exercises the production storage path. The container (`fleet-dev-central`) and its
volume are kept between runs, like the rest of the dev state; `make clean` removes them.
Where no engine answers, `central_container` returns None and says why; the caller falls back.
"""

from __future__ import annotations

import os
import secrets
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["CONTAINER_NAME", "IMAGE", "VOLUME_NAME", "CentralContainer", "central_container"]

IMAGE = "timescale/timescaledb-ha:pg16"
CONTAINER_NAME = "fleet-dev-central"
VOLUME_NAME = "fleet-dev-central-data"


@dataclass
class CentralContainer:
    """A running TimescaleDB container published on 127.0.0.1:`port`."""

    container: Any
    port: int
    password: str

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres:{self.password}@127.0.0.1:{self.port}/postgres"

    def stop(self) -> None:
        self.container.stop(timeout=20)


def central_container(
    port: int, password_file: Any, say: Callable[[str], None]
) -> CentralContainer | None:
    """Start (or restart) the TimescaleDB container; None when Docker is not usable here."""
    try:
        import docker  # the Docker SDK: only this optional path needs an engine
        from docker.errors import DockerException, NotFound
    except ImportError:
        say(
            "CENTRAL=timescale: the docker SDK is not installed; using the local PostgreSQL binaries"
        )
        return None
    reachable, why = _engine_socket_answers()
    if not reachable:
        say(
            f"CENTRAL=timescale: no Docker engine reachable ({why}); using the local PostgreSQL binaries"
        )
        return None
    client = None
    try:
        client = docker.from_env(timeout=10)
        client.ping()
    except DockerException as exc:
        if client is not None:
            client.close()
        say(
            f"CENTRAL=timescale: no Docker engine reachable ({str(exc)[:120]}); using the local PostgreSQL binaries"
        )
        return None
    if password_file.exists():
        password = password_file.read_text().strip()
    else:
        password = secrets.token_urlsafe(24)
        password_file.write_text(password + "\n")
        password_file.chmod(0o600)
    try:
        container = client.containers.get(CONTAINER_NAME)
        container.start()
    except NotFound:
        say(f"starting {IMAGE} as {CONTAINER_NAME} (first run pulls the image)")
        container = client.containers.run(
            IMAGE,
            name=CONTAINER_NAME,
            detach=True,
            environment={"POSTGRES_PASSWORD": password},
            ports={"5432/tcp": ("127.0.0.1", port)},
            volumes={VOLUME_NAME: {"bind": "/home/postgres/pgdata", "mode": "rw"}},
        )
    central = CentralContainer(container, port, password)
    _wait_ready(central)
    return central


def _engine_socket_answers() -> tuple[bool, str]:
    """Cheap probe of a local engine's socket before the SDK (which leaks a socket on failure)."""
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    if not host.startswith("unix://"):
        return True, ""  # a TCP or SSH engine: let the SDK find out
    path = host[len("unix://") :]
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(2)
        try:
            sock.connect(path)
        except OSError as exc:
            return False, f"{path}: {exc.strerror or exc}"
    return True, ""


def _wait_ready(central: CentralContainer, timeout_s: float = 120.0) -> None:
    import psycopg

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with psycopg.connect(central.dsn, connect_timeout=2) as conn:
                conn.execute("SELECT 1")
                return
        except psycopg.OperationalError:
            time.sleep(1)
    raise RuntimeError(f"{CONTAINER_NAME} did not accept connections within {timeout_s:g} s")
