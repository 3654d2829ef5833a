"""Customer database fixtures: a database migrated by the pusher's migrations per test, and
helpers that seed it with sites, devices and a second-by-second history of samples."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from fleetdev.pgcluster import PgCluster
from pusher.migrate import apply_migrations

BASE_TIME = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=6)

INSERT_SITE = """
INSERT INTO monitoring.sites (id, name, timezone, address) VALUES (%s, %s, 'Europe/Amsterdam', %s)
"""
INSERT_DEVICE = """
INSERT INTO monitoring.devices (id, site_id, serial_number, model, name)
VALUES (%s, %s, %s, 'Acuvim IIR', %s)
"""
# One sample per device per second from BASE_TIME + start seconds on, with plausible values.
INSERT_MEASUREMENTS = """
INSERT INTO monitoring.power_measurements
    (device_id, time, v1, v2, v3, i1, i2, i3, p_total, pf_total, freq, energy_imp_kwh)
SELECT d, %(base)s + make_interval(secs => s), 230.0 + d, 229.5, 231.2, 10.0 + s %% 7, 9.5, 10.1,
       7.2, 0.97, 50.0, 1000.0 + s
FROM generate_series(1, %(devices)s) AS d, generate_series(%(start)s, %(stop)s - 1) AS s
"""


def _recreate(cluster: PgCluster, name: str, template: str | None = None) -> str:
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        suffix = f' TEMPLATE "{template}"' if template else ""
        conn.execute(f'CREATE DATABASE "{name}"{suffix}')
    return cluster.dsn(name)


@pytest.fixture(scope="session")
def customer_template(pg_cluster: PgCluster) -> str:
    """A customer database with the pusher migrations applied once (template of each test's)."""
    dsn = _recreate(pg_cluster, "customer_template")
    apply_migrations(dsn)
    return dsn


@pytest.fixture
def customer_db(pg_cluster: PgCluster, customer_template: str) -> Iterator[str]:
    """A migrated customer database, new for this test."""
    name = f"customer_{os.getpid()}"
    yield _recreate(pg_cluster, name, "customer_template")


def seed_inventory(dsn: str, *, sites: int = 2, devices: int = 4) -> None:
    """Sites 1..sites and devices 1..devices spread over them."""
    with psycopg.connect(dsn) as conn:
        for site_id in range(1, sites + 1):
            conn.execute(INSERT_SITE, (site_id, f"Plant {site_id}", f"Street {site_id}"))
        for device_id in range(1, devices + 1):
            site_id = (device_id - 1) % sites + 1
            conn.execute(
                INSERT_DEVICE, (device_id, site_id, f"AW21-{device_id:04d}", f"Feeder {device_id}")
            )


def seed_measurements(dsn: str, *, devices: int = 4, start: int = 0, stop: int = 100) -> int:
    """Samples for devices 1..devices at seconds [start, stop) after BASE_TIME; returns rows."""
    with psycopg.connect(dsn) as conn:
        cur = conn.execute(
            INSERT_MEASUREMENTS,
            {"base": BASE_TIME, "devices": devices, "start": start, "stop": stop},
        )
        return cur.rowcount
