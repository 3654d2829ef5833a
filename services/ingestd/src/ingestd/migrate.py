"""Schema migrations of the central database (yoyo, `ingestd/migrations/`, shipped in the wheel)."""

from __future__ import annotations

from fleetservice import MigrationSet

__all__ = ["MIGRATIONS", "apply_migrations", "migration_ids"]

MIGRATIONS = MigrationSet("ingestd")


def migration_ids() -> list[str]:
    """Ids of every migration in the set, in order (what /readyz expects to be applied)."""
    return MIGRATIONS.ids()


def apply_migrations(database_url: str) -> list[str]:
    """Apply pending migrations under yoyo's lock (safe from several replicas); return their ids."""
    return MIGRATIONS.apply(database_url)
