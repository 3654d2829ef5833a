"""Schema migrations of the customer database (yoyo, set `migrations/pusher/`).

The pusher keeps its own yoyo bookkeeping table so it can share a database with the meter stack's
own yoyo migrations without either seeing the other's set as unknown.
"""

from __future__ import annotations

from pathlib import Path

from fleetservice import MigrationSet

__all__ = [
    "MIGRATIONS",
    "MIGRATIONS_ENV",
    "apply_migrations",
    "pending_migrations",
]

MIGRATIONS_ENV = "PUSHER_MIGRATIONS_DIR"
MIGRATIONS = MigrationSet("pusher", MIGRATIONS_ENV, table="_yoyo_pusher_migration")


def pending_migrations(database_url: str, path: Path | None = None) -> list[str]:
    """Ids of the migrations not yet applied (what `pusher check` reports)."""
    return MIGRATIONS.pending(database_url, path)


def apply_migrations(database_url: str, path: Path | None = None) -> list[str]:
    """Apply pending migrations under yoyo's lock; return their ids."""
    return MIGRATIONS.apply(database_url, path)
