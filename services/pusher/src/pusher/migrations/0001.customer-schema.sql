-- Fleet pusher, customer side: the meter stack's tables (created only when absent; on a
-- database where the meter stack made them, only the columns the pusher reads are added),
-- the push cursor's transaction stamp with its index, and the pusher's own state.
-- depends:

CREATE SCHEMA IF NOT EXISTS monitoring;

CREATE TABLE IF NOT EXISTS monitoring.sites (
    id         bigint PRIMARY KEY,
    name       text NOT NULL,
    timezone   text NOT NULL DEFAULT 'UTC',
    address    text,
    updated_at timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE monitoring.sites
    ADD COLUMN IF NOT EXISTS address text,
    ADD COLUMN IF NOT EXISTS updated_at timestamptz NOT NULL DEFAULT now();

CREATE TABLE IF NOT EXISTS monitoring.devices (
    id            bigint PRIMARY KEY,
    site_id       bigint NOT NULL,
    serial_number text NOT NULL,
    model         text NOT NULL,
    name          text,
    updated_at    timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE monitoring.devices
    ADD COLUMN IF NOT EXISTS name text,
    ADD COLUMN IF NOT EXISTS updated_at timestamptz NOT NULL DEFAULT now();

CREATE TABLE IF NOT EXISTS monitoring.power_measurements (
    device_id bigint NOT NULL,
    time      timestamptz NOT NULL,
    PRIMARY KEY (device_id, time)
);
-- Nullable columns without a default: adding them is a catalog-only change.
ALTER TABLE monitoring.power_measurements
    ADD COLUMN IF NOT EXISTS v1 double precision,
    ADD COLUMN IF NOT EXISTS v2 double precision,
    ADD COLUMN IF NOT EXISTS v3 double precision,
    ADD COLUMN IF NOT EXISTS v12 double precision,
    ADD COLUMN IF NOT EXISTS v23 double precision,
    ADD COLUMN IF NOT EXISTS v31 double precision,
    ADD COLUMN IF NOT EXISTS i1 double precision,
    ADD COLUMN IF NOT EXISTS i2 double precision,
    ADD COLUMN IF NOT EXISTS i3 double precision,
    ADD COLUMN IF NOT EXISTS i_n double precision,
    ADD COLUMN IF NOT EXISTS p1 double precision,
    ADD COLUMN IF NOT EXISTS p2 double precision,
    ADD COLUMN IF NOT EXISTS p3 double precision,
    ADD COLUMN IF NOT EXISTS p_total double precision,
    ADD COLUMN IF NOT EXISTS q_total double precision,
    ADD COLUMN IF NOT EXISTS s_total double precision,
    ADD COLUMN IF NOT EXISTS pf_total double precision,
    ADD COLUMN IF NOT EXISTS freq double precision,
    ADD COLUMN IF NOT EXISTS energy_imp_kwh double precision,
    ADD COLUMN IF NOT EXISTS energy_exp_kwh double precision,
    ADD COLUMN IF NOT EXISTS energy_q_imp_kvarh double precision,
    ADD COLUMN IF NOT EXISTS energy_q_exp_kvarh double precision,
    ADD COLUMN IF NOT EXISTS thd_v double precision,
    ADD COLUMN IF NOT EXISTS thd_i double precision;

-- received_at: when the customer stack stored the row (now() is stable: no table rewrite).
-- push_xid: the transaction that last wrote the row. Its volatile default rewrites an existing
-- table once, stamping every existing row with this migration's transaction: they all ship.
ALTER TABLE monitoring.power_measurements
    ADD COLUMN IF NOT EXISTS received_at timestamptz NOT NULL DEFAULT now(),
    ADD COLUMN IF NOT EXISTS push_xid xid8 NOT NULL DEFAULT pg_current_xact_id();

-- An updated row must ship again (central keeps the first delivery; re-sending is harmless),
-- so an UPDATE restamps it with the updating transaction.
CREATE OR REPLACE FUNCTION monitoring.fleet_push_restamp() RETURNS trigger
    LANGUAGE plpgsql AS
$$
BEGIN
    NEW.push_xid := pg_current_xact_id();
    RETURN NEW;
END
$$;
DROP TRIGGER IF EXISTS fleet_push_restamp ON monitoring.power_measurements;
CREATE TRIGGER fleet_push_restamp
    BEFORE UPDATE ON monitoring.power_measurements
    FOR EACH ROW EXECUTE FUNCTION monitoring.fleet_push_restamp();

-- The cursor query is an index range scan on this key.
CREATE INDEX IF NOT EXISTS power_measurements_push_idx
    ON monitoring.power_measurements (push_xid, device_id, time);

CREATE SCHEMA IF NOT EXISTS app;

CREATE TABLE app.fleet_push_state (
    resource                   text PRIMARY KEY
                               CHECK (resource IN ('sites', 'devices', 'measurements')),
    cursor                     text,
    batch_size                 integer NOT NULL CHECK (batch_size >= 1),
    consecutive_failures       integer NOT NULL DEFAULT 0,
    next_attempt_at            timestamptz,
    last_status                integer,
    last_error                 text,
    last_error_at              timestamptz,
    last_success_at            timestamptz,
    shipped_rows               bigint NOT NULL DEFAULT 0,
    newest_shipped_received_at timestamptz,
    updated_at                 timestamptz NOT NULL DEFAULT now()
);

-- A single row that ingestd refuses even alone (413): kept here with the reason, never lost.
CREATE TABLE app.fleet_push_quarantine (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    resource       text NOT NULL,
    device_id      bigint,
    time           timestamptz,
    push_xid       xid8,
    payload        text NOT NULL,
    reason         text NOT NULL,
    quarantined_at timestamptz NOT NULL DEFAULT now()
);
