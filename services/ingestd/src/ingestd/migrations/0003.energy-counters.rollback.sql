-- The hourly aggregate depends on these: roll back 0003 only after dropping it
-- (ingestd's bootstrap re-creates it).
DROP FUNCTION fleet.counter_of(fleet.energy_counters_state, integer);
DROP AGGREGATE fleet.energy_counters(double precision, double precision, double precision, double precision, double precision);
DROP FUNCTION fleet.energy_counters_step(fleet.energy_counters_state, double precision, double precision, double precision, double precision, double precision);
DROP TYPE fleet.energy_counters_state;
DROP TYPE fleet.counter_summary;
