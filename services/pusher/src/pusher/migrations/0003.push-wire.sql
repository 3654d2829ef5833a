-- What the pusher keeps for a lean wire: the digest of the last full set of sites (devices)
-- ingestd accepted and when (an unchanged set is not sent again before FLEET_FULL_SET_INTERVAL_S),
-- the bytes sent per resource (`pusher status`: bytes per row and the projected drain time), and
-- the body type ingestd last accepted measurements in (a restarted pusher sends columnar from
-- its first batch when ingestd took it before).
-- depends: 0002.push-item-type

ALTER TABLE app.fleet_push_state
    ADD COLUMN full_set_digest  bytea,
    ADD COLUMN full_set_sent_at timestamptz,
    ADD COLUMN sent_bytes       bigint NOT NULL DEFAULT 0,
    ADD COLUMN media_type       text;
