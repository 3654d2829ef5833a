"""Reading the customer database: the measurements after the push cursor (as a JSON body built
by PostgreSQL, `reads`, or as columns, `columns`), the sites and devices full sets, the backlog,
the snapshot horizon and what holds it back; the database's size and free disk (`footprint`); which rows the protocol can carry (`carriable`).

Every statement here only reads, except `restamp_future_rows` (a restored database). The push
state and its quarantine are `pusher.state`'s.
"""

from pusher.source.columns import BatchBuilder, columnar_encoder, read_measurement_columns
from pusher.source.footprint import data_directory, database_size, free_disk_bytes
from pusher.source.reads import (
    APPLICATION_NAME,
    BACKLOG_COUNT_BOUND,
    Backlog,
    BlockingTransaction,
    FullSet,
    MeasurementBatch,
    SnapshotHorizon,
    connect,
    count_shippable,
    find_blocking_transaction,
    ping,
    read_backlog,
    read_devices,
    read_horizon,
    read_measurements,
    read_sites,
    restamp_future_rows,
)

__all__ = [
    "APPLICATION_NAME",
    "BACKLOG_COUNT_BOUND",
    "Backlog",
    "BatchBuilder",
    "BlockingTransaction",
    "FullSet",
    "MeasurementBatch",
    "SnapshotHorizon",
    "columnar_encoder",
    "connect",
    "count_shippable",
    "data_directory",
    "database_size",
    "find_blocking_transaction",
    "free_disk_bytes",
    "ping",
    "read_backlog",
    "read_devices",
    "read_horizon",
    "read_measurement_columns",
    "read_measurements",
    "read_sites",
    "restamp_future_rows",
]
