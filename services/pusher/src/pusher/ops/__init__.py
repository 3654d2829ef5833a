"""What operators see of a running pusher: Prometheus metrics (`metrics`), the backlog and lag
gauges (`progress`), systemd's READY/STATUS/WATCHDOG (`systemd`), and `pusher status`
(`status`).
"""

from pusher.ops.metrics import OUTCOMES, PusherMetrics, failure_status, outcome_of
from pusher.ops.progress import PushProgress, measurement_lag_s
from pusher.ops.scrape import serve_metrics
from pusher.ops.status import collect_status
from pusher.ops.systemd import SystemdNotifier

__all__ = [
    "OUTCOMES",
    "PushProgress",
    "PusherMetrics",
    "SystemdNotifier",
    "collect_status",
    "failure_status",
    "measurement_lag_s",
    "outcome_of",
    "serve_metrics",
]
