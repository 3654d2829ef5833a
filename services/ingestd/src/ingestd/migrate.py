"""Schema migrations of the central database (yoyo, set `migrations/ingestd/`)."""

from __future__ import annotations

import os
from pathlib import Path

from yoyo import get_backend, read_migrations

__all__ = ["MIGRATIONS_ENV", "apply_migrations", "migration_ids", "migrations_dir"]

MIGRATIONS_ENV = "INGESTD_MIGRATIONS_DIR"


def migrations_dir() -> Path:
    """$INGESTD_MIGRATIONS_DIR (container images), else `migrations/ingestd` of the checkout."""
    explicit = os.environ.get(MIGRATIONS_ENV)
    if explicit:
        return Path(explicit)
    for parent in Path(__file__).resolve().parents:
        candidate = parent / "migrations" / "ingestd"
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"migrations/ingestd not found; set {MIGRATIONS_ENV}")


def _yoyo_url(database_url: str) -> str:
    """yoyo's URL for the database, with its bookkeeping tables pinned to schema `public`.

    Without the pin yoyo looks for its tables in `current_schema`, which is `fleet` once that
    schema exists and the role is also called fleet (`"$user"` leads the default search_path).
    """
    scheme, sep, rest = database_url.partition("://")
    if not sep or scheme not in {"postgres", "postgresql"}:
        raise ValueError("database URL must start with postgresql://")
    joiner = "&" if "?" in rest else "?"
    return f"postgresql+psycopg://{rest}{joiner}schema=public"


def migration_ids(path: Path | None = None) -> list[str]:
    """Ids of every migration in the set, in order (what /readyz expects to be applied)."""
    return [m.id for m in read_migrations(str(path or migrations_dir()))]


def apply_migrations(database_url: str, path: Path | None = None) -> list[str]:
    """Apply pending migrations under yoyo's lock (safe from several replicas); return their ids."""
    backend = get_backend(_yoyo_url(database_url))
    try:
        migrations = read_migrations(str(path or migrations_dir()))
        with backend.lock():
            pending = backend.to_apply(migrations)
            backend.apply_migrations(pending)
        return [m.id for m in pending]
    finally:
        backend.connection.close()
