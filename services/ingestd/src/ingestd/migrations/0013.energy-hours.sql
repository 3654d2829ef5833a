-- Stored energy per device-hour, so that reads do not recompute every crossing segment of their
-- range (ingestd.storage.stored_energy, docs/ENERGY.md "How it is computed"): the energy of the
-- four registers in the hour, whether a reset touched it, and the longest sample spacing its
-- energy rests on (compared with the usual interval at read time: `energy_estimated`), and the
-- hour's samples, first and last sample time (the usual interval is inferred from them). Rows
-- for every hour with samples or known energy, the hours inside a hole included.
-- `energy_frontier`: per device, the hours before `stored_until` are stored (from then on,
-- changes mark their hours in fleet.hourly_dirty and the housekeeping recomputes them);
-- '-infinity' until the housekeeping has computed the device's history (the backfill, a bounded
-- number of hours per cycle), 'infinity' on plain PostgreSQL once caught up (every sample marks
-- its hour there). Reads compute from the raw summaries what is not stored yet.
-- depends: 0012.energy-revisions
CREATE TABLE fleet.energy_hours (
    customer_id        bigint NOT NULL,
    device_id          bigint NOT NULL,
    bucket             timestamptz NOT NULL,
    energy_imp_kwh     double precision,
    energy_exp_kwh     double precision,
    energy_q_imp_kvarh double precision,
    energy_q_exp_kvarh double precision,
    energy_reset       boolean NOT NULL,
    max_spacing_s      double precision,
    samples            bigint NOT NULL,
    first_time         timestamptz,
    last_time          timestamptz,
    PRIMARY KEY (customer_id, device_id, bucket)
);
CREATE TABLE fleet.energy_frontier (
    customer_id  bigint NOT NULL,
    device_id    bigint NOT NULL,
    stored_until timestamptz NOT NULL DEFAULT '-infinity',
    PRIMARY KEY (customer_id, device_id)
);
CREATE INDEX energy_frontier_until_idx ON fleet.energy_frontier (stored_until);
-- Marks lost (TRUNCATE of fleet.hourly_dirty): what changed is no longer known, so the stored
-- energy is dropped and recomputed from the summaries, as after this migration.
CREATE FUNCTION fleet.energy_hours_forget() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    TRUNCATE fleet.energy_hours;
    UPDATE fleet.energy_frontier SET stored_until = '-infinity';
    RETURN NULL;
END
$$;
CREATE TRIGGER hourly_dirty_truncated AFTER TRUNCATE ON fleet.hourly_dirty
    FOR EACH STATEMENT EXECUTE FUNCTION fleet.energy_hours_forget();
INSERT INTO fleet.energy_frontier (customer_id, device_id)
SELECT customer_id, id FROM fleet.devices ON CONFLICT DO NOTHING;
