"""The central database of `make dev CENTRAL=timescale`: the TimescaleDB image, through Docker.

Production runs the central database on TimescaleDB (`timescale/timescaledb-ha`). Where a Docker
engine is reachable (docker's, or podman's Docker-compatible API: `podman system service`, then
DOCKER_HOST=unix://…), the dev stack can run that image instead of the local PostgreSQL binaries,
so a developer exercises the production storage path. The image is configurable (CENTRAL_IMAGE);
where the TimescaleDB image cannot be pulled, the local stand-in
`localhost/fleet-standin/postgres:15-bookworm` is used if it has been built (`make
central-image`; plain PostgreSQL 15, so ingestd takes its plain path). The container
(`fleet-dev-central`) and its volume are kept between runs, like the rest of the dev state;
`make clean` removes them. Where no engine answers, or no image can be had, `central_container`
returns None and says why; the caller falls back to the local binaries.
"""

from __future__ import annotations

import os
import secrets
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = [
    "CONTAINER_NAME",
    "IMAGE",
    "STANDIN_IMAGE",
    "VOLUME_NAME",
    "CentralContainer",
    "central_container",
]

IMAGE = "docker.io/timescale/timescaledb-ha:pg16"
STANDIN_IMAGE = "localhost/fleet-standin/postgres:15-bookworm"
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
    port: int,
    password_file: Any,
    say: Callable[[str], None],
    image: str = "",
    name: str = CONTAINER_NAME,
    volume: str = VOLUME_NAME,
) -> CentralContainer | None:
    """Start (or restart) the central database container; None when Docker is not usable here.

    `image` defaults to CENTRAL_IMAGE from the environment, else the TimescaleDB image.
    """
    image = image or os.environ.get("CENTRAL_IMAGE", "") or IMAGE
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
        container = client.containers.get(name)
        say(f"restarting {name} ({container.image.tags or container.image.id})")
        container.start()
    except NotFound:
        usable = _image_at_hand(client, image, say)
        if usable is None:
            client.close()
            return None
        say(f"starting {usable} as {name}")
        container = client.containers.run(
            usable,
            name=name,
            detach=True,
            environment={"POSTGRES_PASSWORD": password},
            ports={"5432/tcp": ("127.0.0.1", port)},
            volumes={volume: {"bind": "/home/postgres/pgdata", "mode": "rw"}},
        )
    central = CentralContainer(container, port, password)
    _wait_ready(central)
    return central


def _image_at_hand(client: Any, image: str, say: Callable[[str], None]) -> str | None:
    """`image` if present or pullable; else the local stand-in if built; else None (said why)."""
    from docker.errors import APIError, ImageNotFound

    try:
        client.images.get(image)
        return image
    except ImageNotFound:
        pass
    try:
        say(f"pulling {image}")
        client.images.pull(image)
        return image
    except APIError as exc:
        reason = str(exc.explanation or exc)[-160:]
        say(f"CENTRAL=timescale: {image} cannot be pulled ({reason})")
    if image == IMAGE:
        try:
            client.images.get(STANDIN_IMAGE)
            say(f"using the local stand-in {STANDIN_IMAGE} (plain PostgreSQL 15, no TimescaleDB)")
            return STANDIN_IMAGE
        except ImageNotFound:
            say(f"`make central-image` builds the local stand-in {STANDIN_IMAGE}")
    say("CENTRAL=timescale: using the local PostgreSQL binaries")
    return None


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
