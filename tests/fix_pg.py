"""PostgreSQL fixtures: one throwaway cluster per test session, a clean slate per test."""

from __future__ import annotations

import os
from collections.abc import Iterator

import psycopg
import pytest
from fleetdev.pgcluster import PgCluster, temporary_cluster


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    """A PostgreSQL server started from the machine's binaries for this test session."""
    with temporary_cluster(prefix="fleet-test-pg-") as cluster:
        yield cluster


def _fresh_database(cluster: PgCluster, name: str) -> str:
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return cluster.dsn(name)


@pytest.fixture(scope="session")
def central_template(pg_cluster: PgCluster) -> str:
    """A database migrated and bootstrapped once (`ingestd migrate`), the template of each test's."""
    import asyncio

    from ingestd.migrate import apply_migrations
    from ingestd.storage import StoragePlan, bootstrap_database

    dsn = _fresh_database(pg_cluster, "central_template")
    apply_migrations(dsn)
    asyncio.run(
        bootstrap_database(
            dsn, StoragePlan(timescaledb=os.environ.get("FLEET_TEST_TIMESCALEDB", "auto"))
        )
    )
    return dsn


@pytest.fixture
def central_db(pg_cluster: PgCluster, central_template: str) -> str:
    """A migrated central database, new for this test (cloned from the template: fast)."""
    name = f"central_{os.getpid()}"
    with psycopg.connect(pg_cluster.dsn(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE central_template')
    return pg_cluster.dsn(name)
