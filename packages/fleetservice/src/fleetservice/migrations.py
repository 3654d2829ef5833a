"""A service's yoyo migration set, shipped inside the service's package (`<package>/migrations/`).

yoyo reads it as `package:<package>:migrations` (importlib.resources), so the same code finds it
in the checkout, in an installed wheel and in the images: no directory to configure.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

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
    """The migrations in `<package>/migrations/`, with their own yoyo bookkeeping table."""

    package: str
    table: str = "_yoyo_migration"

    @property
    def source(self) -> str:
        return f"package:{self.package}:migrations"

    def _read(self) -> Any:
        migrations = read_migrations(self.source)
        if not migrations:
            # yoyo skips a missing package folder silently: an install without its migrations
            # must not report "applied 0" as if the schema were current.
            raise FileNotFoundError(f"no migrations found in {self.source}")
        return migrations

    def ids(self) -> list[str]:
        """Every migration of the set, in order."""
        return [m.id for m in self._read()]

    def pending(self, database_url: str) -> list[str]:
        migrations = self._read()
        backend = get_backend(yoyo_url(database_url), migration_table=self.table)
        try:
            return [m.id for m in backend.to_apply(migrations)]
        finally:
            backend.connection.close()

    def apply(self, database_url: str) -> list[str]:
        """Apply what is pending under yoyo's lock (safe from several processes); return the ids."""
        migrations = self._read()
        backend = get_backend(yoyo_url(database_url), migration_table=self.table)
        try:
            with backend.lock():
                pending = backend.to_apply(migrations)
                backend.apply_migrations(pending)
            return [m.id for m in pending]
        finally:
            backend.connection.close()
