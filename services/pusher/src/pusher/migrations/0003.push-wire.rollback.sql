ALTER TABLE app.fleet_push_state
    DROP COLUMN IF EXISTS full_set_digest,
    DROP COLUMN IF EXISTS full_set_sent_at,
    DROP COLUMN IF EXISTS sent_bytes,
    DROP COLUMN IF EXISTS media_type;
