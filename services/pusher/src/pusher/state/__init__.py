"""The pusher's own state in the customer database: each resource's cursor, batch size and
failures (`app.fleet_push_state`), the quarantine of rows that cannot be delivered
(`app.fleet_push_quarantine`), and their repair after a restore (`recovery`).
"""

from pusher.state.push_state import PushState, ResourceState, count_quarantined, load_states
from pusher.state.recovery import Recovery, recover_restored_database

__all__ = [
    "PushState",
    "Recovery",
    "ResourceState",
    "count_quarantined",
    "load_states",
    "recover_restored_database",
]
