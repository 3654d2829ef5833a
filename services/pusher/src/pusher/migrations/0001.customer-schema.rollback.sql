-- Drops only what the pusher owns; the meter stack's tables and data stay.
DROP TABLE IF EXISTS app.fleet_push_quarantine;
DROP TABLE IF EXISTS app.fleet_push_state;
DROP INDEX IF EXISTS monitoring.power_measurements_push_idx;
DROP TRIGGER IF EXISTS fleet_push_restamp ON monitoring.power_measurements;
DROP FUNCTION IF EXISTS monitoring.fleet_push_restamp();
ALTER TABLE monitoring.power_measurements DROP COLUMN IF EXISTS push_xid;
