-- Hourly buckets (customer, device, hour) whose raw rows changed and whose rollup must be
-- recomputed: every bucket on plain PostgreSQL, and on TimescaleDB only buckets older than the
-- continuous aggregate's refresh window (the policy never looks back that far).
-- `version` grows each time a batch marks the bucket again, so the refresher clears exactly
-- the marks it has processed and never one added while it worked.
-- depends: 0001.initial-schema

CREATE TABLE fleet.hourly_dirty (
    customer_id bigint NOT NULL,
    device_id   bigint NOT NULL,
    bucket      timestamptz NOT NULL,
    version     bigint NOT NULL DEFAULT 1,
    marked_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (customer_id, device_id, bucket)
);
CREATE INDEX hourly_dirty_marked_idx ON fleet.hourly_dirty (marked_at);
