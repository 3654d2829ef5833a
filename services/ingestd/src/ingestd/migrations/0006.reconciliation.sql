-- Reconciliation (docs/PROTOCOL.md, "Reconciliation"): batches a pusher re-sends to repair a
-- central loss are marked in the audit trail, and each customer's last digest exchange is kept.
-- depends: 0005.audit-retention

ALTER TABLE fleet.ingest_events ADD COLUMN repair boolean NOT NULL DEFAULT false;
-- Repair batches are rare: a partial index keeps "what was repaired, when" cheap to read.
CREATE INDEX ingest_events_repair_idx ON fleet.ingest_events (customer_id, received_at DESC)
    WHERE repair;

-- One row per customer: its last digest request and running totals of what they found.
CREATE TABLE fleet.customer_reconciliation (
    customer_id       bigint PRIMARY KEY REFERENCES fleet.customers (id) ON DELETE CASCADE,
    last_digest_at    timestamptz NOT NULL,
    last_cells        integer NOT NULL,
    last_differing    integer NOT NULL,
    last_differing_at timestamptz,
    digest_requests   bigint NOT NULL DEFAULT 0,
    cells_compared    bigint NOT NULL DEFAULT 0,
    cells_differing   bigint NOT NULL DEFAULT 0
);
