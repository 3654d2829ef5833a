-- Corrections: spans of a device's energy that changed after they were final (a late back-fill
-- recomputed by the housekeeping), with when (ingestd.storage.revisions, docs/ENERGY.md).
-- depends: 0011.hourly-dirty-picked
CREATE TABLE fleet.energy_revisions (
    customer_id bigint NOT NULL,
    device_id   bigint NOT NULL,
    span_start  timestamptz NOT NULL,
    span_end    timestamptz NOT NULL,
    revised_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (customer_id, revised_at, device_id, span_start)
);
