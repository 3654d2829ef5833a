-- Progress of `ingestd convert-storage` (docs/STORAGE.md): the chunks or partitions whose rows
-- stored before the scaled layout (migration 0008) have been converted to integer steps. A part
-- listed here is skipped by a later run; a run that stopped half-way through a part (a crash,
-- Ctrl-C, --max-slices) redoes that part, skipping the rows it already converted.
-- depends: 0008.scaled-measurements

CREATE TABLE fleet.storage_conversion (
    part          text PRIMARY KEY,
    rows_converted bigint NOT NULL,
    seconds       double precision NOT NULL,
    finished_at   timestamptz NOT NULL DEFAULT now()
);
