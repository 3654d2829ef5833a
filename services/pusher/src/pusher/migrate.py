"""Schema migrations of the customer database (yoyo, `pusher/migrations/`, shipped in the wheel).

The pusher keeps its own yoyo bookkeeping table so it can share a database with the meter stack's
own yoyo migrations without either seeing the other's set as unknown.
"""

from __future__ import annotations

from fleetservice import MigrationSet

__all__ = ["MIGRATIONS", "apply_migrations", "pending_migrations"]

MIGRATIONS = MigrationSet("pusher", table="_yoyo_pusher_migration")


def pending_migrations(database_url: str) -> list[str]:
    """Ids of the migrations not yet applied (what `pusher check` reports)."""
    return MIGRATIONS.pending(database_url)


def apply_migrations(database_url: str) -> list[str]:
    """Apply pending migrations under yoyo's lock; return their ids."""
    return MIGRATIONS.apply(database_url)
