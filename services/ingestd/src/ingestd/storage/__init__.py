"""All of ingestd's SQL (besides the migrations), as named constants next to the code that runs it.

writes.py       what a batch writes in its transaction: rows, dirty marks, dead letters, audit
layout.py       the stored row (scaled integers + exact doubles) and the readers' view
copybuffer.py   a batch's binary COPY stream in the stored layout (numpy)
conversion.py   converting rows stored before the scaled layout, online (convert-storage)
reads.py        token lookup, readiness, the operators' read API
state.py        StorageState: the mode and known partitions; what a batch needs prepared
bootstrap.py    TimescaleDB or native partitioning, and the hourly aggregate
partitions.py   weekly partitions (plain PostgreSQL)
rollup.py       recomputing dirty hourly buckets (plain rollup, TimescaleDB refresh)
aggregate.py    the hourly aggregate's columns and SQL, for both paths
quarters.py     the quarter-hour counter summaries (exact register at 15-minute edges), both paths
energy.py       energy per hour / local day and completeness, as SQL functions (docs/ENERGY.md)
maintenance.py  the housekeeping turn, partitions ahead, retention
customers.py    customer and token rows (the `ingestd customers` CLI)
"""

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
