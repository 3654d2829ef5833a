"""Schema migrations of the central database (yoyo, set `migrations/ingestd/`)."""

from __future__ import annotations

from pathlib import Path

from fleetservice import MigrationSet

__all__ = ["MIGRATIONS", "apply_migrations", "migration_ids"]

MIGRATIONS = MigrationSet("ingestd", "INGESTD_MIGRATIONS_DIR")


def migration_ids(path: Path | None = None) -> list[str]:
    """Ids of every migration in the set, in order (what /readyz expects to be applied)."""
    return MIGRATIONS.ids(path)


def apply_migrations(database_url: str, path: Path | None = None) -> list[str]:
    """Apply pending migrations under yoyo's lock (safe from several replicas); return their ids."""
    return MIGRATIONS.apply(database_url, path)
