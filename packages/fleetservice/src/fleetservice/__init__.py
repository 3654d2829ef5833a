"""fleetservice: the plumbing both services run on — reading settings from the environment,
configuring structlog, and applying a yoyo migration set. Libraries stay out of it; services
(pusher, ingestd) import it and never each other."""

from fleetservice.envconfig import EnvReader
from fleetservice.logs import configure_logging, log_output_failures
from fleetservice.migrations import MigrationSet

__all__ = ["EnvReader", "MigrationSet", "configure_logging", "log_output_failures"]
