"""Central time-series storage: bootstrap (TimescaleDB or native partitioning), weekly
partitions, and the hourly aggregate's maintenance."""

from ingestd.storage.bootstrap import (
    BootstrapError,
    StorageMode,
    StoragePlan,
    bootstrap_database,
    bootstrap_storage,
    detect_mode,
    timescale_available,
)

__all__ = [
    "BootstrapError",
    "StorageMode",
    "StoragePlan",
    "bootstrap_database",
    "bootstrap_storage",
    "detect_mode",
    "timescale_available",
]
