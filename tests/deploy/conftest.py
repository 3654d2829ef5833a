"""Fixtures of the deploy tests: each image built by a container engine, and each image's
virtualenv built outside a container; both once per session."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
from fleetdev.pgcluster import PgCluster

from tests.deploy.containers import Images, built_images
from tests.deploy.dockerfile import REPO, BuiltImage, build_outside_container

DEPLOY = REPO / "deploy"


def _image(name: str, factory: pytest.TempPathFactory) -> BuiltImage:
    return build_outside_container(DEPLOY / f"{name}.Dockerfile", factory.mktemp(f"image-{name}"))


@pytest.fixture(scope="session")
def ingestd_image(tmp_path_factory: pytest.TempPathFactory) -> BuiltImage:
    """deploy/ingestd.Dockerfile's final stage, assembled on this host."""
    return _image("ingestd", tmp_path_factory)


@pytest.fixture(scope="session")
def pusher_image(tmp_path_factory: pytest.TempPathFactory) -> BuiltImage:
    """deploy/pusher.Dockerfile's final stage, assembled on this host."""
    return _image("pusher", tmp_path_factory)


@pytest.fixture(scope="session")
def simulator_image(tmp_path_factory: pytest.TempPathFactory) -> BuiltImage:
    """deploy/simulator.Dockerfile's final stage, assembled on this host."""
    return _image("simulator", tmp_path_factory)


def _empty_database(cluster: PgCluster, name: str) -> str:
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return cluster.dsn(name)


@pytest.fixture
def empty_central_db(pg_cluster: PgCluster) -> str:
    """A central database with nothing in it, as a fresh deployment finds it."""
    return _empty_database(pg_cluster, "deploy_central")


@pytest.fixture
def empty_customer_db(pg_cluster: PgCluster) -> str:
    """A customer database with nothing in it, as a new gateway finds it."""
    return _empty_database(pg_cluster, "deploy_customer")


@pytest.fixture(scope="session")
def images() -> Iterator[Images]:
    """The three images built by a real container engine once per session (skips if none)."""
    with built_images() as built:
        yield built
