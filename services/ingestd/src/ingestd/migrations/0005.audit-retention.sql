-- Retention of the operational tables (INGESTD_AUDIT_RETENTION_DAYS, INGESTD_REJECTED_RETENTION_DAYS):
-- housekeeping deletes the oldest rows in small batches, found through BRIN indexes on
-- received_at (rows arrive in time order, so a BRIN index is a few pages and costs inserts
-- next to nothing).
-- The customers endpoint reads per-customer hourly counters written with each batch's audit row
-- instead of summing a day of audit rows per customer on every call.
-- depends: 0002.hourly-dirty-buckets

CREATE INDEX ingest_events_received_brin ON fleet.ingest_events USING brin (received_at);
CREATE INDEX rejected_rows_received_brin ON fleet.rejected_rows USING brin (received_at);

CREATE TABLE fleet.customer_hourly_counts (
    customer_id bigint NOT NULL REFERENCES fleet.customers (id) ON DELETE CASCADE,
    hour        timestamptz NOT NULL,
    batches     integer NOT NULL DEFAULT 0,
    accepted    bigint NOT NULL DEFAULT 0,
    rejected    bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (customer_id, hour)
);

INSERT INTO fleet.customer_hourly_counts (customer_id, hour, batches, accepted, rejected)
SELECT customer_id, date_trunc('hour', received_at), count(*),
       coalesce(sum(accepted) FILTER (WHERE batch_type = 'measurements'), 0), sum(rejected)
FROM fleet.ingest_events
WHERE received_at > now() - interval '25 hours' AND status = 200
GROUP BY 1, 2;
