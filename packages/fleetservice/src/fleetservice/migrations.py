"""A service's yoyo migration set: where it lives, what is pending, applying it under a lock."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from yoyo import get_backend, read_migrations

__all__ = ["MigrationSet"]


def yoyo_url(database_url: str) -> str:
    """yoyo's URL for the database, its bookkeeping tables pinned to schema `public`.

    Without the pin yoyo looks for its tables in `current_schema`, which changes under it when a
    migration creates a schema named like the role (`"$user"` leads the default search_path).
    """
    scheme, sep, rest = database_url.partition("://")
    if not sep or scheme not in {"postgres", "postgresql"}:
        raise ValueError("database URL must start with postgresql://")
    joiner = "&" if "?" in rest else "?"
    return f"postgresql+psycopg://{rest}{joiner}schema=public"


@dataclass(frozen=True, slots=True)
class MigrationSet:
    """`migrations/<name>/` of the checkout, or `$<env_var>` in packaged installs."""

    name: str
    env_var: str
    table: str = "_yoyo_migration"

    def directory(self) -> Path:
        explicit = os.environ.get(self.env_var)
        if explicit:
            return Path(explicit)
        for parent in Path(__file__).resolve().parents:
            candidate = parent / "migrations" / self.name
            if candidate.is_dir():
                return candidate
        raise FileNotFoundError(f"migrations/{self.name} not found; set {self.env_var}")

    def ids(self, path: Path | None = None) -> list[str]:
        """Every migration of the set, in order."""
        return [m.id for m in read_migrations(str(path or self.directory()))]

    def pending(self, database_url: str, path: Path | None = None) -> list[str]:
        backend = get_backend(yoyo_url(database_url), migration_table=self.table)
        try:
            return [m.id for m in backend.to_apply(read_migrations(str(path or self.directory())))]
        finally:
            backend.connection.close()

    def apply(self, database_url: str, path: Path | None = None) -> list[str]:
        """Apply what is pending under yoyo's lock (safe from several processes); return the ids."""
        backend = get_backend(yoyo_url(database_url), migration_table=self.table)
        try:
            migrations = read_migrations(str(path or self.directory()))
            with backend.lock():
                pending = backend.to_apply(migrations)
                backend.apply_migrations(pending)
            return [m.id for m in pending]
        finally:
            backend.connection.close()
