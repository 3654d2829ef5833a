-- A mark is rewritten only after the refresher has picked it: a batch that touches an hour
-- already marked and not yet picked leaves the mark as it is (the refresher will read its rows
-- anyway), so at fleet scale, where every device-hour is touched every minute, marks are no
-- longer rewritten once a minute each (ingestd.storage.rollup, "Marks").
-- `marked_at` is now when the hour was first marked since it was last recomputed, and no longer
-- indexed: the refresher picks the oldest hours that have ended, through an index on `bucket`.
-- depends: 0010.token-truncate-notify
ALTER TABLE fleet.hourly_dirty ADD COLUMN picked boolean NOT NULL DEFAULT false;
DROP INDEX fleet.hourly_dirty_marked_idx;
CREATE INDEX hourly_dirty_bucket_idx ON fleet.hourly_dirty (bucket);
