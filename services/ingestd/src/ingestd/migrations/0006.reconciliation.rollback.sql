DROP TABLE fleet.customer_reconciliation;
DROP INDEX fleet.ingest_events_repair_idx;
ALTER TABLE fleet.ingest_events DROP COLUMN repair;
