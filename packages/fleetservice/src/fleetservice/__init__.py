"""fleetservice: the plumbing both services run on — reading settings from the environment,
configuring structlog, and applying a yoyo migration set. Libraries stay out of it; services
(pusher, ingestd) import it and never each other."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fleetservice.envconfig import EnvReader
from fleetservice.logs import configure_logging, log_output_failures

if TYPE_CHECKING:
    from fleetservice.migrations import MigrationSet

__all__ = ["EnvReader", "MigrationSet", "configure_logging", "log_output_failures"]


def __getattr__(name: str) -> Any:
    """`MigrationSet` (and yoyo, sqlparse … behind it) is imported when first asked for: a
    running pusher never migrates, and importing them costs its start-up ~0.4 s (PEP 562)."""
    if name == "MigrationSet":
        from fleetservice.migrations import MigrationSet

        globals()[name] = MigrationSet
        return MigrationSet
    raise AttributeError(f"module 'fleetservice' has no attribute {name!r}")
