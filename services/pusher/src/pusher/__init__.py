"""pusher: the customer-side daemon that pushes sites, devices and measurements to ingestd.

The public API is what tests and embedding code drive: `run(settings, stop_event)` and
`Settings.from_env(environ)`. The command line is `pusher run|migrate|status|check`.
"""

from pusher.deferred import defer_unused_imports
from pusher.versions import prefill_psycopg_versions

# Both before psycopg's first import: pusher/versions.py and pusher/deferred.py say why.
prefill_psycopg_versions()
defer_unused_imports()

from pusher.daemon import Pusher, run  # noqa: E402
from pusher.errors import ConfigError, PusherError  # noqa: E402
from pusher.settings import Settings  # noqa: E402

__all__ = ["ConfigError", "Pusher", "PusherError", "Settings", "run"]
