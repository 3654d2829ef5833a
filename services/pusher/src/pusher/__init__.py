"""pusher: the customer-side daemon that pushes sites, devices and measurements to ingestd.

The public API is what tests and embedding code drive: `run(settings, stop_event)` and
`Settings.from_env(environ)`. The command line is `pusher run|migrate|status|check`.
"""

from pusher.daemon import Pusher, run
from pusher.errors import ConfigError, PusherError
from pusher.settings import Settings

__all__ = ["ConfigError", "Pusher", "PusherError", "Settings", "run"]
