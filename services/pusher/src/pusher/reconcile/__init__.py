"""Reconciliation: the pusher proves the centre still holds what it shipped, and re-sends what
it lost (docs/PROTOCOL.md, "Reconciliation").

    cells       the cells a pass compares and how it drills down (pure)
    passes      one pass: digests, drill-down, repair batches, known differences
    schedule    when the daemon runs a pass (start, interval, identity change), its books
    metrics     the Prometheus series

The SQL is with the rest of the pusher's: `pusher.source.digests` (what is compared and
re-sent), `pusher.state.reconcile_state` (what is remembered).
"""

from pusher.reconcile.metrics import ReconcileMetrics
from pusher.reconcile.passes import PassFailed, PassReport, run_pass
from pusher.reconcile.schedule import Reconciler, record_of

__all__ = ["PassFailed", "PassReport", "ReconcileMetrics", "Reconciler", "record_of", "run_pass"]
