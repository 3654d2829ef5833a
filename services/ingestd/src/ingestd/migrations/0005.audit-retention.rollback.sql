DROP TABLE fleet.customer_hourly_counts;
DROP INDEX fleet.rejected_rows_received_brin;
DROP INDEX fleet.ingest_events_received_brin;
