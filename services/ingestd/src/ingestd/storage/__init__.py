"""All of ingestd's SQL (besides the migrations), as named constants next to the code that runs it.

What a batch does:
writes.py       what a measurement batch writes in its transaction: rows, dirty marks
full_sets.py    a full set of sites or devices in one statement: upsert, soft delete, audit row
audit.py        a batch's audit row (last seen, hourly counters) and its dead letters
streamed.py     a large batch COPYed chunk by chunk as it is decoded (falls back to writes.py)
state.py        StorageState: the mode and known partitions; what a batch needs prepared
layout.py       the stored row (scaled integers + exact doubles) and the readers' view
copybuffer.py   a batch's binary COPY stream in the stored layout (numpy)
binary_arrays.py a small batch's columns as binary array parameters (numpy)
tokens.py       the push token lookup (the `Customer` it names) and its change notifications

The storage itself:
bootstrap.py    TimescaleDB or native partitioning, and the aggregates made (their SQL is theirs)
partitions.py   weekly partitions (plain PostgreSQL), and an unpartitioned table moved into them
aggregate.py    the hourly aggregate's columns and SQL, its rollup table and views, for both paths
quarters.py     the quarter-hour counter summaries (exact register at 15-minute edges), both paths
rollup.py       recomputing dirty hourly buckets (plain rollup, TimescaleDB refresh)
revisions.py    corrections: spans of energy revised after they were final, and their feed
stored_energy.py the energy per device-hour: its SQL functions, and the reads that sum it
energy_upkeep.py the stored energy's upkeep: frontiers advanced, spans a recompute moved stored again
energy_sets.py  the stored energy of many devices in one statement (a round's steps, a recompute's spans)
maintenance.py  the housekeeping turn, partitions ahead, closed weeks packed, raw-row retention
retention.py    retention of the operational tables (audit trail, dead letters)
conversion.py   converting rows stored before the scaled layout, online (convert-storage)
locks.py        the advisory-lock keys of every deployment-wide turn, each once

What is read:
snapshots.py    reads that must see one snapshot (read-only REPEATABLE READ)
reads.py        readiness, customers, sites and devices, hourly/daily energy, completeness
energy.py       energy per hour / local day and completeness, as SQL functions (docs/ENERGY.md)
segments.py     how a register's increase is split over intervals (what energy.py and the totals build on)
totals.py       energy of a site or a customer per local hour, day or month
demand.py       peak demand per day or month (docs/ENERGY.md)
digests.py      reconciliation: digests of what the centre holds, the database's identity
gateways.py     gateway health reports, their history and the stored gateway states
meters.py       the inputs of the meters' states (`ingestd.fleetstate`)
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
