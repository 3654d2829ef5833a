DROP INDEX fleet.hourly_dirty_bucket_idx;
CREATE INDEX hourly_dirty_marked_idx ON fleet.hourly_dirty (marked_at);
ALTER TABLE fleet.hourly_dirty DROP COLUMN picked;
