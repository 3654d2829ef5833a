"""Throwaway PostgreSQL clusters from the machine's server binaries.

Tests, benchmarks and `make dev` need real PostgreSQL servers they fully own: initdb into a
folder, a free loopback port, trust authentication, fsync off, and a clean stop at the end.
Nothing here depends on a system service being up.

PostgreSQL refuses to run as root. When this process is root, the cluster runs as the
`postgres` system user (created by the distribution's server package) through `runuser`,
and the data folder is handed over to that user.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "PgCluster",
    "PgClusterError",
    "find_pg_bindir",
    "free_port",
    "temporary_cluster",
    "timescaledb_installed",
]

_SEARCH_ROOTS = ("/usr/lib/postgresql", "/usr/local/pgsql", "/opt/homebrew/opt", "/usr/pgsql")


class PgClusterError(RuntimeError):
    """The throwaway cluster could not be created, started or stopped."""


def find_pg_bindir() -> Path:
    """Return the folder of `initdb`/`pg_ctl`: $FLEET_PG_BINDIR, else the newest installed major."""
    explicit = os.environ.get("FLEET_PG_BINDIR")
    if explicit:
        path = Path(explicit)
        if not (path / "initdb").exists():
            raise PgClusterError(f"FLEET_PG_BINDIR={explicit} has no initdb")
        return path
    candidates: list[Path] = []
    for root in _SEARCH_ROOTS:
        base = Path(root)
        if base.is_dir():
            candidates.extend(p / "bin" for p in base.iterdir() if (p / "bin" / "initdb").exists())
    if candidates:

        def major(p: Path) -> float:
            try:
                return float(p.parent.name.split("@")[-1])
            except ValueError:
                return 0.0

        return max(candidates, key=major)
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    raise PgClusterError(
        "no PostgreSQL server binaries found (looked for initdb under "
        f"{', '.join(_SEARCH_ROOTS)} and on PATH); install postgresql or set FLEET_PG_BINDIR"
    )


def timescaledb_installed(bindir: Path | None = None) -> bool:
    """Whether the server's library folder holds TimescaleDB (it must then be preloaded)."""
    try:
        pg_config = (bindir or find_pg_bindir()) / "pg_config"
        libdir = subprocess.run(
            [str(pg_config), "--pkglibdir"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError, PgClusterError):
        return False
    return (Path(libdir) / "timescaledb.so").exists()


def free_port() -> int:
    """Ask the kernel for a free loopback TCP port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class PgCluster:
    """One PostgreSQL cluster in `datadir`, listening on 127.0.0.1:`port` only."""

    datadir: Path
    port: int = field(default_factory=free_port)
    bindir: Path = field(default_factory=find_pg_bindir)
    user: str = "fleet"
    settings: dict[str, str] = field(default_factory=dict)
    timescaledb: bool = False
    log_file: Path | None = None  # the server's log; `server.log` in the data folder by default

    @property
    def _run_as(self) -> list[str]:
        if os.geteuid() != 0:
            return []
        return ["runuser", "-u", "postgres", "--"]

    def _chown(self, path: Path) -> None:
        if os.geteuid() != 0:
            return
        entry = pwd.getpwnam("postgres")
        for root, dirs, files in os.walk(path):
            os.chown(root, entry.pw_uid, entry.pw_gid)
            for name in dirs + files:
                with contextlib.suppress(FileNotFoundError):
                    os.chown(
                        os.path.join(root, name), entry.pw_uid, entry.pw_gid, follow_symlinks=False
                    )

    def _run(
        self, *args: str, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [*self._run_as, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and proc.returncode != 0:
            raise PgClusterError(
                f"{' '.join(args[:2])} failed ({proc.returncode}): {proc.stderr.strip()}"
            )
        return proc

    @property
    def initialized(self) -> bool:
        return (self.datadir / "PG_VERSION").exists()

    def dsn(self, dbname: str = "postgres") -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{dbname}"

    def init(self) -> None:
        """initdb with trust auth on loopback; idempotent when the folder already holds a cluster."""
        if self.initialized:
            return
        self.datadir.mkdir(parents=True, exist_ok=True)
        self._chown(self.datadir)
        self._run(
            str(self.bindir / "initdb"),
            "-D",
            str(self.datadir),
            "-U",
            self.user,
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
        )

    def start(self, wait_s: float = 30.0) -> None:
        options = {
            "listen_addresses": "127.0.0.1",
            "port": str(self.port),
            "unix_socket_directories": "''",
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "max_connections": "200",
            "shared_buffers": "256MB",
            "max_wal_size": "2GB",
            "logging_collector": "off",
        }
        if self.timescaledb:
            options["shared_preload_libraries"] = "timescaledb"
            options["timescaledb.telemetry_level"] = "off"
        options.update(self.settings)
        opts = " ".join(f"-c {k}={v}" for k, v in options.items())
        log = self.log_file or self.datadir / "server.log"
        if os.geteuid() == 0 and self.log_file is not None:
            log.touch()  # the server runs as `postgres`: it must be able to append to its log
            entry = pwd.getpwnam("postgres")
            os.chown(log, entry.pw_uid, entry.pw_gid)
        self._run(
            str(self.bindir / "pg_ctl"),
            "-D",
            str(self.datadir),
            "-l",
            str(log),
            "-o",
            opts,
            "-w",
            "-t",
            str(int(wait_s)),
            "start",
        )
        self.wait_ready(wait_s)

    def wait_ready(self, wait_s: float = 30.0) -> None:
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.settimeout(0.5)
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        raise PgClusterError(
            f"PostgreSQL on port {self.port} did not accept connections in {wait_s}s"
        )

    def stop(self, mode: str = "fast") -> None:
        """Stop the server; `mode="immediate"` is a hard stop (no checkpoint, like a crash)."""
        if not (self.datadir / "postmaster.pid").exists():
            return
        self._run(
            str(self.bindir / "pg_ctl"),
            "-D",
            str(self.datadir),
            "-m",
            mode,
            "-w",
            "stop",
            check=False,
        )

    @property
    def running(self) -> bool:
        proc = self._run(
            str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "status", check=False
        )
        return proc.returncode == 0

    def create_database(self, name: str) -> str:
        """Create database `name` (if absent) and return its DSN."""
        import psycopg

        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (name,)
            ).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{name}"')  # name comes from our own code
        return self.dsn(name)


@contextlib.contextmanager
def temporary_cluster(
    prefix: str = "fleet-pg-", *, timescaledb: bool = False, **settings: str
) -> Iterator[PgCluster]:
    """A started cluster in a temporary folder, stopped and removed on exit (`timescaledb`:
    preload the extension, which must be installed)."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    if os.geteuid() == 0:
        os.chmod(tmp, 0o755)  # noqa: S103 - the postgres user must reach its data folder
    cluster = PgCluster(datadir=tmp / "data", settings=dict(settings), timescaledb=timescaledb)
    try:
        cluster.init()
        cluster.start()
        yield cluster
    finally:
        with contextlib.suppress(Exception):
            cluster.stop("immediate")
        shutil.rmtree(tmp, ignore_errors=True)
