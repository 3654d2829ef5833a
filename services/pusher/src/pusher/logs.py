"""structlog set-up (shared with ingestd: see fleetservice.logs)."""

from fleetservice.logs import configure_logging

__all__ = ["configure_logging"]
