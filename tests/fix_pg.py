"""PostgreSQL fixtures: one throwaway cluster per test session, a fresh database per test.

Where TimescaleDB is installed, the session cluster preloads it (with its background workers
off, so template databases can be cloned) and the central database takes the TimescaleDB path;
`central_db_plain` always takes the plain-PostgreSQL path. Tests that must run on both use
the `storage_db` fixture, parametrized over the two paths; its TimescaleDB variant skips, saying
why, where the extension is not installed. `scalar` and `wait_for` read a database from a test.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from fleetdev.pgcluster import PgCluster, temporary_cluster, timescaledb_installed

TIMESCALEDB = timescaledb_installed() and os.environ.get("FLEET_TEST_TIMESCALEDB", "auto") != "off"


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    """A PostgreSQL server started from the machine's binaries for this test session."""
    extra = {"timescaledb.max_background_workers": "0"} if TIMESCALEDB else {}
    with temporary_cluster(prefix="fleet-test-pg-", timescaledb=TIMESCALEDB, **extra) as cluster:
        yield cluster


def _fresh_database(cluster: PgCluster, name: str) -> str:
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return cluster.dsn(name)


def migrate_central(dsn: str, timescaledb: str = "auto") -> None:
    """What `ingestd migrate` does: the migrations, then the storage bootstrap."""
    from ingestd.migrate import apply_migrations
    from ingestd.storage import StoragePlan, bootstrap_database

    apply_migrations(dsn)
    asyncio.run(bootstrap_database(dsn, StoragePlan(timescaledb=timescaledb)))


def _template(cluster: PgCluster, name: str, timescaledb: str) -> str:
    """A database as `ingestd migrate` leaves it, made once and cloned by each test."""
    migrate_central(_fresh_database(cluster, name), timescaledb)
    return name


@pytest.fixture(scope="session")
def central_template(pg_cluster: PgCluster) -> str:
    """Template: TimescaleDB path where installed, plain PostgreSQL otherwise."""
    return _template(pg_cluster, "central_template", "on" if TIMESCALEDB else "off")


@pytest.fixture(scope="session")
def central_template_plain(pg_cluster: PgCluster) -> str:
    """Template on the plain-PostgreSQL path (partitions + rollup), whatever is installed."""
    return _template(pg_cluster, "central_template_plain", "off")


def _clone(cluster: PgCluster, template: str, name: str) -> str:
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    return cluster.dsn(name)


@pytest.fixture
def central_db(pg_cluster: PgCluster, central_template: str) -> str:
    """A migrated, bootstrapped central database, new for this test."""
    return _clone(pg_cluster, central_template, f"central_{os.getpid()}")


@pytest.fixture
def central_db_plain(pg_cluster: PgCluster, central_template_plain: str) -> str:
    """A central database on the plain-PostgreSQL path, new for this test."""
    return _clone(pg_cluster, central_template_plain, f"central_plain_{os.getpid()}")


@pytest.fixture(params=["postgresql", "timescaledb"])
def storage_db(request: pytest.FixtureRequest, pg_cluster: PgCluster) -> str:
    """A fresh central database on each storage path in turn."""
    if request.param == "timescaledb":
        if not TIMESCALEDB:
            pytest.skip(
                "TimescaleDB path not tested: the extension is not installed on this machine's "
                "PostgreSQL (or FLEET_TEST_TIMESCALEDB=off); the plain-PostgreSQL path ran instead"
            )
        return _clone(
            pg_cluster, request.getfixturevalue("central_template"), f"central_ts_{os.getpid()}"
        )
    return _clone(
        pg_cluster, request.getfixturevalue("central_template_plain"), f"central_pg_{os.getpid()}"
    )


def scalar(dsn: str, query: str, params: Any = None) -> Any:
    """The first column of the first row of `query` (None without rows), in autocommit."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(query, params).fetchone()
        return row[0] if row else None


async def wait_for(
    predicate: Callable[[], bool], *, timeout_s: float = 30.0, what: str = "condition"
) -> None:
    """Poll `predicate` (in a thread: it may query a database) until true or the deadline."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await asyncio.to_thread(predicate):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
