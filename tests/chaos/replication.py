"""A central PostgreSQL with a streaming replica on this machine, for failover scenarios.

    with replicated_central(tmp, synchronous=True) as central:   # primary + standby, migrated
        central.dsn                      # multi-host DSN: host=primary,standby, read-write only
        central.pause_replication()      # the standby's WAL receiver stops (primary_conninfo '')
        central.fail_over()              # primary stopped hard, standby promoted

The standby is a `pg_basebackup -R` copy streaming from the primary. In the synchronous mode the
primary names it in `synchronous_standby_names` with `synchronous_commit = on`: a commit returns
only once the standby has flushed its WAL, so a promoted standby holds every acknowledged
commit; with the standby's receiver paused, commits wait. In the asynchronous mode a commit
returns once the primary alone has it: what the standby had not received is gone after a
failover.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
from fleetdev.pgcluster import PgCluster, PgClusterError

from tests.chaos.stack import migrate_central_database

__all__ = ["ReplicatedCentral", "replicated_central"]

STANDBY_NAME = "fleet_standby"
PRIMARY_SETTINGS = {
    "synchronous_commit": "on",
    "full_page_writes": "on",
    "wal_level": "replica",
    "max_wal_senders": "5",
    "wal_keep_size": "256MB",
    "wal_sender_timeout": "5s",
}


@dataclass
class ReplicatedCentral:
    primary: PgCluster
    standby: PgCluster
    database: str
    synchronous: bool

    @property
    def dsn(self) -> str:
        """Both hosts, the writable one wins: what ingestd is given to follow a failover."""
        hosts = f"127.0.0.1:{self.primary.port},127.0.0.1:{self.standby.port}"
        return (
            f"postgresql://fleet@{hosts}/{self.database}"
            "?target_session_attrs=read-write&connect_timeout=2"
        )

    def primary_dsn(self) -> str:
        return self.primary.dsn(self.database)

    def standby_dsn(self) -> str:
        return self.standby.dsn(self.database)

    def _conninfo(self) -> str:
        return f"host=127.0.0.1 port={self.primary.port} user=fleet application_name={STANDBY_NAME}"

    def _set_standby(self, name: str, value: str) -> None:
        with psycopg.connect(self.standby.dsn(), autocommit=True) as conn:
            conn.execute(f"ALTER SYSTEM SET {name} = '{value}'")
            conn.execute("SELECT pg_reload_conf()")

    def streaming(self) -> bool:
        with psycopg.connect(self.primary.dsn(), autocommit=True) as conn:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_replication WHERE application_name = %s "
                "AND state = 'streaming'",
                (STANDBY_NAME,),
            ).fetchone()
        return bool(row and row[0])

    def wait_streaming(self, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not self.streaming():
            if time.monotonic() > deadline:
                raise PgClusterError(f"the standby did not stream within {timeout_s}s")
            time.sleep(0.1)

    def caught_up(self) -> bool:
        """The standby has replayed everything the primary has written so far."""
        with psycopg.connect(self.primary.dsn(), autocommit=True) as conn:
            row = conn.execute(
                "SELECT bool_and(replay_lsn >= pg_current_wal_lsn()) FROM pg_stat_replication "
                "WHERE application_name = %s",
                (STANDBY_NAME,),
            ).fetchone()
        return bool(row and row[0])

    def pause_replication(self) -> None:
        """Stop the standby's WAL receiver: nothing the primary writes from now on reaches it."""
        self._set_standby("primary_conninfo", "")
        deadline = time.monotonic() + 15
        while self.streaming() and time.monotonic() < deadline:
            time.sleep(0.05)
        if self.streaming():
            raise PgClusterError("the standby's WAL receiver did not stop")

    def resume_replication(self) -> None:
        self._set_standby("primary_conninfo", self._conninfo())
        self.wait_streaming()

    def fail_over(self) -> None:
        """The primary dies (immediate stop, like a crash); the standby is promoted."""
        self.primary.stop("immediate")
        self.standby._run(
            str(self.standby.bindir / "pg_ctl"), "-D", str(self.standby.datadir), "-w", "promote"
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with (
                contextlib.suppress(psycopg.OperationalError),
                psycopg.connect(self.standby.dsn(), autocommit=True) as conn,
            ):
                row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
                if row == (False,):
                    return
            time.sleep(0.1)
        raise PgClusterError("the promoted standby did not leave recovery within 30s")


def _owned_by_postgres(path: Path) -> None:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if os.geteuid() == 0:
        entry = pwd.getpwnam("postgres")
        os.chown(path, entry.pw_uid, entry.pw_gid)


@contextlib.contextmanager
def replicated_central(
    database: str = "fleet", *, synchronous: bool, migrate: bool = True
) -> Iterator[ReplicatedCentral]:
    """A primary (migrated `database`) and a streaming standby, stopped and removed on exit."""
    tmp = Path(tempfile.mkdtemp(prefix="fleet-chaos-replicated-"))
    if os.geteuid() == 0:
        os.chmod(tmp, 0o755)  # noqa: S103 - the postgres user must reach its data folders
    primary = PgCluster(datadir=tmp / "primary", settings=dict(PRIMARY_SETTINGS))
    standby = PgCluster(datadir=tmp / "standby", settings={"hot_standby": "on"})
    central = ReplicatedCentral(primary, standby, database, synchronous)
    try:
        primary.init()
        primary.start()
        dsn = primary.create_database(database)
        if migrate:
            migrate_central_database(dsn)
        _owned_by_postgres(standby.datadir)
        primary._run(
            str(primary.bindir / "pg_basebackup"),
            "-h", "127.0.0.1", "-p", str(primary.port), "-U", "fleet",
            "-D", str(standby.datadir), "-X", "stream", "-R", "--no-sync",
        )  # fmt: skip
        with (standby.datadir / "postgresql.auto.conf").open("a") as conf:
            conf.write(f"primary_conninfo = '{central._conninfo()}'\n")
        standby.start()
        central.wait_streaming()
        if synchronous:
            with psycopg.connect(primary.dsn(), autocommit=True) as conn:
                conn.execute(f"ALTER SYSTEM SET synchronous_standby_names = '\"{STANDBY_NAME}\"'")
                conn.execute("SELECT pg_reload_conf()")
        yield central
    finally:
        for cluster in (standby, primary):
            with contextlib.suppress(Exception):
                cluster.stop("immediate")
        shutil.rmtree(tmp, ignore_errors=True)
