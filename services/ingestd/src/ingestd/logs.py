"""structlog set-up (shared with the pusher: see fleetservice.logs)."""

from fleetservice.logs import configure_logging

__all__ = ["configure_logging"]
