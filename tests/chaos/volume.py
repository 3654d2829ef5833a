"""Small volumes that fill up: a tmpfs of a few MB mounted for one test (root only), and a
PostgreSQL cluster whose data folder and WAL each live on one.

    with small_volume(64) as vol:
        vol.fill()         # a filler file takes every free byte: writes now fail with ENOSPC
        vol.free()         # the space is back

    with cluster_on_volumes(data_mb=96, wal_mb=96) as (cluster, data, wal):
        ...                # cluster started; data.fill() or wal.fill() to make it run out

Mounting needs root (this machine's test runs are root); elsewhere the fixtures skip, saying why.
Every mount is unmounted on exit (lazily if something still holds it open).
"""

from __future__ import annotations

import contextlib
import errno
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from fleetdev.pgcluster import PgCluster

__all__ = [
    "SmallVolume",
    "cluster_on_volumes",
    "need_new_wal_segments",
    "small_volume",
    "volumes_unavailable",
]

_FILLER = ".filler"


def volumes_unavailable() -> str | None:
    """Why small volumes cannot be mounted here, or None when they can."""
    if os.geteuid() != 0:
        return "mounting a small tmpfs needs root"
    if shutil.which("mount") is None:
        return "no mount command"
    return None


@dataclass
class SmallVolume:
    path: Path
    size_mb: int

    def free_bytes(self) -> int:
        stat = os.statvfs(self.path)
        return stat.f_bavail * stat.f_frsize

    def fill(self, leave_bytes: int = 0) -> int:
        """Take all free space but `leave_bytes` with a filler file; return the bytes taken."""
        filler = self.path / _FILLER
        taken = 0
        chunk = b"\0" * (1 << 20)
        with filler.open("ab") as out:
            while True:
                room = self.free_bytes() - leave_bytes
                if room <= 0:
                    break
                try:
                    out.write(chunk[: min(len(chunk), room)])
                    out.flush()
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break
                taken += min(len(chunk), room)
        return taken

    def free(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.path / _FILLER).unlink()

    @property
    def full(self) -> bool:
        return self.free_bytes() < 64 * 1024


@contextlib.contextmanager
def small_volume(size_mb: int, *, owner: str | None = None) -> Iterator[SmallVolume]:
    """A tmpfs of `size_mb` MB on a fresh folder, owned by `owner` (a user name) if given."""
    reason = volumes_unavailable()
    if reason is not None:
        pytest.skip(reason)
    path = Path(tempfile.mkdtemp(prefix="fleet-volume-"))
    os.chmod(path, 0o755)  # noqa: S103 - the postgres user must reach what is mounted here
    try:
        mounted = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size_mb}m,mode=0755", "tmpfs", str(path)],
            capture_output=True,
            text=True,
            check=False,
        )
        if mounted.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
        try:
            if owner is not None:
                entry = pwd.getpwnam(owner)
                os.chown(path, entry.pw_uid, entry.pw_gid)
            yield SmallVolume(path, size_mb)
        finally:
            if subprocess.run(["umount", str(path)], capture_output=True, check=False).returncode:
                subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)
    finally:
        with contextlib.suppress(OSError):
            path.rmdir()


@contextlib.contextmanager
def cluster_on_volumes(
    *, data_mb: int = 128, wal_mb: int = 128, **settings: str
) -> Iterator[tuple[PgCluster, SmallVolume, SmallVolume]]:
    """A started PostgreSQL whose data folder is on one small volume and pg_wal on another
    (initdb --waldir), with WAL kept small so it is recycled within the volume."""
    with (
        small_volume(data_mb, owner="postgres") as data,
        small_volume(wal_mb, owner="postgres") as wal,
    ):
        defaults = {"max_wal_size": "48MB", "min_wal_size": "32MB", "wal_keep_size": "0"}
        cluster = PgCluster(datadir=data.path / "pg", settings={**defaults, **settings})
        cluster.datadir.mkdir()
        entry = pwd.getpwnam("postgres")
        os.chown(cluster.datadir, entry.pw_uid, entry.pw_gid)
        cluster._run(
            str(cluster.bindir / "initdb"),
            "-D", str(cluster.datadir), "--waldir", str(wal.path / "pg_wal"),
            "-U", cluster.user, "--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync",
        )  # fmt: skip
        try:
            cluster.start()
            yield cluster, data, wal
        finally:
            with contextlib.suppress(Exception):
                cluster.stop("immediate")


def need_new_wal_segments(cluster: PgCluster, switches: int = 8, pause_s: float = 0.3) -> int:
    """Switch to a new WAL segment `switches` times while the cluster is written to, so it runs
    past its recycled segments and must create one (on a full WAL volume: a PANIC). Returns the
    switches that went through before the server stopped answering."""
    done = 0
    for _ in range(switches):
        try:
            with psycopg.connect(cluster.dsn(), autocommit=True, connect_timeout=2) as conn:
                conn.execute(
                    "CREATE TEMP TABLE wal_filler AS SELECT generate_series(1, 20000) AS n"
                )
                conn.execute("SELECT pg_switch_wal()")
            done += 1
        except psycopg.Error:
            break
        time.sleep(pause_s)
    return done
