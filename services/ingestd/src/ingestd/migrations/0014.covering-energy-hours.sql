-- The stored energy's primary key carries every column the reads take from it (energy, reset,
-- longest spacing, samples, first and last sample time), so that a device's hours are read from
-- the index alone (index-only scans: consecutive leaf pages, no heap page per hour; the hours of
-- a device are stored an hour at a time, interleaved with every other device's). A year of days
-- of one device reads ~8,800 of them twice (its energy and its usual interval), a 50-device year
-- 440,000 (ingestd.storage.stored_energy, docs/ENERGY.md).
-- The new key is built CONCURRENTLY (reads and the housekeeping's stores go on meanwhile), then
-- takes the old one's place in a moment; hence no transaction. A build that failed leaves an
-- invalid index, dropped by the next attempt.
-- depends: 0013.energy-hours
-- transactional: false
DROP INDEX CONCURRENTLY IF EXISTS fleet.energy_hours_covering;
CREATE UNIQUE INDEX CONCURRENTLY energy_hours_covering ON fleet.energy_hours
    (customer_id, device_id, bucket)
    INCLUDE (energy_imp_kwh, energy_exp_kwh, energy_q_imp_kvarh, energy_q_exp_kvarh,
             energy_reset, max_spacing_s, samples, first_time, last_time);
ALTER TABLE fleet.energy_hours
    DROP CONSTRAINT energy_hours_pkey,
    ADD CONSTRAINT energy_hours_pkey PRIMARY KEY USING INDEX energy_hours_covering;
