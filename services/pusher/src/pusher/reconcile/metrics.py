"""Reconciliation's Prometheus series, in the pusher's own registry (names listed with the rest
in `pusher.ops.metrics`)."""

from __future__ import annotations

from pusher.ops.prom import Counter, Gauge, Registry

__all__ = ["ReconcileMetrics"]

RESULTS = ("in_sync", "repaired", "failed")


class ReconcileMetrics:
    def __init__(self, registry: Registry) -> None:
        r = registry
        self.passes = Counter(
            "fleet_pusher_reconcile_passes",
            "Reconciliation passes, by result: in_sync, repaired, failed.",
            ["result"],
            registry=r,
        )
        self.rows_resent = Counter(
            "fleet_pusher_reconcile_rows_resent",
            "Rows re-sent as repair batches (not counted in fleet_pusher_rows_shipped_total).",
            registry=r,
        )
        self.rows_restored = Counter(
            "fleet_pusher_reconcile_rows_restored",
            "Re-sent rows the centre stored again (it had lost them).",
            registry=r,
        )
        self.cells_repaired = Counter(
            "fleet_pusher_reconcile_cells_repaired",
            "Device-hours whose rows were re-sent.",
            registry=r,
        )
        self.bytes = Counter(
            "fleet_pusher_reconcile_bytes",
            "Bytes of reconciliation (digests and repair batches, headers included), by "
            "direction: sent, received.",
            ["direction"],
            registry=r,
        )
        self.last_pass = Gauge(
            "fleet_pusher_reconcile_last_pass_timestamp_seconds",
            "When the last reconciliation pass ended (Unix time), whatever its result.",
            registry=r,
        )
        self.known_differences = Gauge(
            "fleet_pusher_reconcile_known_differences",
            "Device-hours where the centre holds other keys than the gateway and a re-send "
            "changed nothing (rows deleted here, rows the centre refuses).",
            registry=r,
        )
        self.identity_changes = Counter(
            "fleet_pusher_central_identity_changes",
            "Times ingestd's answers named another central database (failover, restore, restart).",
            registry=r,
        )
        for result in RESULTS:
            self.passes.labels(result)
        for direction in ("sent", "received"):
            self.bytes.labels(direction)
