"""Schema migrations of the customer database (yoyo, set `migrations/pusher/`)."""

from __future__ import annotations

import os
from pathlib import Path

from yoyo import get_backend, read_migrations

__all__ = ["MIGRATIONS_ENV", "apply_migrations", "migrations_dir", "pending_migrations"]

MIGRATIONS_ENV = "PUSHER_MIGRATIONS_DIR"
_TABLE = "_yoyo_pusher_migration"


def migrations_dir() -> Path:
    """$PUSHER_MIGRATIONS_DIR (packaged installs), else `migrations/pusher` of the checkout."""
    explicit = os.environ.get(MIGRATIONS_ENV)
    if explicit:
        return Path(explicit)
    for parent in Path(__file__).resolve().parents:
        candidate = parent / "migrations" / "pusher"
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"migrations/pusher not found; set {MIGRATIONS_ENV}")


def _yoyo_url(database_url: str) -> str:
    scheme, sep, rest = database_url.partition("://")
    if not sep or scheme not in {"postgres", "postgresql"}:
        raise ValueError("database URL must start with postgresql://")
    return f"postgresql+psycopg://{rest}"


def pending_migrations(database_url: str, path: Path | None = None) -> list[str]:
    """Ids of the migrations not yet applied (what `pusher check` reports)."""
    backend = get_backend(_yoyo_url(database_url), migration_table=_TABLE)
    try:
        migrations = read_migrations(str(path or migrations_dir()))
        return [m.id for m in backend.to_apply(migrations)]
    finally:
        backend.connection.close()


def apply_migrations(database_url: str, path: Path | None = None) -> list[str]:
    """Apply pending migrations under yoyo's lock; return their ids.

    The pusher keeps its own yoyo bookkeeping table so it can share a database with the meter
    stack's own yoyo migrations without either seeing the other's set as unknown.
    """
    backend = get_backend(_yoyo_url(database_url), migration_table=_TABLE)
    try:
        migrations = read_migrations(str(path or migrations_dir()))
        with backend.lock():
            pending = backend.to_apply(migrations)
            backend.apply_migrations(pending)
        return [m.id for m in pending]
    finally:
        backend.connection.close()
