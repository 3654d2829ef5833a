-- Measurements as scaled integers (issue 22, docs/STORAGE.md): each value is stored as the
-- integer k = value x 10^decimals at its field's resolution (fleetcore.resolution: 0.1 V, 0.001 A,
-- 0.001 kW/kvar/kVA and pf, 0.01 Hz, 0.1 kWh/kvarh, 0.01 %), which TimescaleDB compresses to a byte
-- or two where a float8 costs 5-8. A value that is not a whole number of steps (finer than the
-- resolution, -0.0, out of the integer's range) is kept exactly as sent in the column of its own
-- name, which is NULL otherwise (a NULL costs nothing compressed and nothing in a heap row).
--
-- The table is renamed `fleet.power_measurements_scaled` (a catalog change: no row is rewritten;
-- a hypertable, its chunks and its compressed chunks keep their data), the integer columns are
-- added (nullable, no default: catalog only), and `fleet.power_measurements` becomes a view with
-- today's columns, names, order and double precision types, so every reader is unchanged:
-- value = coalesce(<name>, <name>_scaled / 10^decimals), bit-identical to what was sent. Rows
-- stored before this migration have their values in the float8 columns and read the same; the
-- conversion of those rows is online and resumable (`ingestd storage convert`).
-- Inserting into the view works (an INSTEAD OF trigger splits each value); ingestd writes the
-- table directly (binary COPY, values split in numpy).
-- depends: 0007.gateway-health

-- k when v is exactly k / factor, compared on the bits of the integer k over factor (so -0.0 is
-- not 0), and |k| <= max_steps.
CREATE FUNCTION fleet.to_scaled(v double precision, factor double precision, max_steps double precision)
RETURNS bigint LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
SELECT CASE WHEN abs(round(v * factor)) <= max_steps
                 AND float8send(round(v * factor)::bigint / factor) = float8send(v)
            THEN round(v * factor)::bigint END
$$;
-- (One expression, not STRICT: PostgreSQL inlines it into the statements that call it.)

ALTER TABLE fleet.power_measurements RENAME TO power_measurements_scaled;

ALTER TABLE fleet.power_measurements_scaled
    ADD COLUMN v1_scaled integer,
    ADD COLUMN v2_scaled integer,
    ADD COLUMN v3_scaled integer,
    ADD COLUMN v12_scaled integer,
    ADD COLUMN v23_scaled integer,
    ADD COLUMN v31_scaled integer,
    ADD COLUMN i1_scaled integer,
    ADD COLUMN i2_scaled integer,
    ADD COLUMN i3_scaled integer,
    ADD COLUMN i_n_scaled integer,
    ADD COLUMN p1_scaled integer,
    ADD COLUMN p2_scaled integer,
    ADD COLUMN p3_scaled integer,
    ADD COLUMN p_total_scaled integer,
    ADD COLUMN q_total_scaled integer,
    ADD COLUMN s_total_scaled integer,
    ADD COLUMN pf_total_scaled integer,
    ADD COLUMN freq_scaled integer,
    ADD COLUMN energy_imp_kwh_scaled bigint,
    ADD COLUMN energy_exp_kwh_scaled bigint,
    ADD COLUMN energy_q_imp_kvarh_scaled bigint,
    ADD COLUMN energy_q_exp_kvarh_scaled bigint,
    ADD COLUMN thd_v_scaled integer,
    ADD COLUMN thd_i_scaled integer;

COMMENT ON COLUMN fleet.power_measurements_scaled.v1_scaled IS 'v1 in steps of 0.1 V';
COMMENT ON COLUMN fleet.power_measurements_scaled.v2_scaled IS 'v2 in steps of 0.1 V';
COMMENT ON COLUMN fleet.power_measurements_scaled.v3_scaled IS 'v3 in steps of 0.1 V';
COMMENT ON COLUMN fleet.power_measurements_scaled.v12_scaled IS 'v12 in steps of 0.1 V';
COMMENT ON COLUMN fleet.power_measurements_scaled.v23_scaled IS 'v23 in steps of 0.1 V';
COMMENT ON COLUMN fleet.power_measurements_scaled.v31_scaled IS 'v31 in steps of 0.1 V';
COMMENT ON COLUMN fleet.power_measurements_scaled.i1_scaled IS 'i1 in steps of 0.001 A';
COMMENT ON COLUMN fleet.power_measurements_scaled.i2_scaled IS 'i2 in steps of 0.001 A';
COMMENT ON COLUMN fleet.power_measurements_scaled.i3_scaled IS 'i3 in steps of 0.001 A';
COMMENT ON COLUMN fleet.power_measurements_scaled.i_n_scaled IS 'i_n in steps of 0.001 A';
COMMENT ON COLUMN fleet.power_measurements_scaled.p1_scaled IS 'p1 in steps of 0.001 kW';
COMMENT ON COLUMN fleet.power_measurements_scaled.p2_scaled IS 'p2 in steps of 0.001 kW';
COMMENT ON COLUMN fleet.power_measurements_scaled.p3_scaled IS 'p3 in steps of 0.001 kW';
COMMENT ON COLUMN fleet.power_measurements_scaled.p_total_scaled IS 'p_total in steps of 0.001 kW';
COMMENT ON COLUMN fleet.power_measurements_scaled.q_total_scaled IS 'q_total in steps of 0.001 kvar';
COMMENT ON COLUMN fleet.power_measurements_scaled.s_total_scaled IS 's_total in steps of 0.001 kVA';
COMMENT ON COLUMN fleet.power_measurements_scaled.pf_total_scaled IS 'pf_total in steps of 0.001';
COMMENT ON COLUMN fleet.power_measurements_scaled.freq_scaled IS 'freq in steps of 0.01 Hz';
COMMENT ON COLUMN fleet.power_measurements_scaled.energy_imp_kwh_scaled IS 'energy_imp_kwh in steps of 0.1 kWh';
COMMENT ON COLUMN fleet.power_measurements_scaled.energy_exp_kwh_scaled IS 'energy_exp_kwh in steps of 0.1 kWh';
COMMENT ON COLUMN fleet.power_measurements_scaled.energy_q_imp_kvarh_scaled IS 'energy_q_imp_kvarh in steps of 0.1 kvarh';
COMMENT ON COLUMN fleet.power_measurements_scaled.energy_q_exp_kvarh_scaled IS 'energy_q_exp_kvarh in steps of 0.1 kvarh';
COMMENT ON COLUMN fleet.power_measurements_scaled.thd_v_scaled IS 'thd_v in steps of 0.01 %';
COMMENT ON COLUMN fleet.power_measurements_scaled.thd_i_scaled IS 'thd_i in steps of 0.01 %';

CREATE OR REPLACE VIEW fleet.power_measurements AS
SELECT m.time, m.customer_id, m.device_id, m.received_at,
       coalesce(m.v1, m.v1_scaled / 10::float8) AS v1,
       coalesce(m.v2, m.v2_scaled / 10::float8) AS v2,
       coalesce(m.v3, m.v3_scaled / 10::float8) AS v3,
       coalesce(m.v12, m.v12_scaled / 10::float8) AS v12,
       coalesce(m.v23, m.v23_scaled / 10::float8) AS v23,
       coalesce(m.v31, m.v31_scaled / 10::float8) AS v31,
       coalesce(m.i1, m.i1_scaled / 1000::float8) AS i1,
       coalesce(m.i2, m.i2_scaled / 1000::float8) AS i2,
       coalesce(m.i3, m.i3_scaled / 1000::float8) AS i3,
       coalesce(m.i_n, m.i_n_scaled / 1000::float8) AS i_n,
       coalesce(m.p1, m.p1_scaled / 1000::float8) AS p1,
       coalesce(m.p2, m.p2_scaled / 1000::float8) AS p2,
       coalesce(m.p3, m.p3_scaled / 1000::float8) AS p3,
       coalesce(m.p_total, m.p_total_scaled / 1000::float8) AS p_total,
       coalesce(m.q_total, m.q_total_scaled / 1000::float8) AS q_total,
       coalesce(m.s_total, m.s_total_scaled / 1000::float8) AS s_total,
       coalesce(m.pf_total, m.pf_total_scaled / 1000::float8) AS pf_total,
       coalesce(m.freq, m.freq_scaled / 100::float8) AS freq,
       coalesce(m.energy_imp_kwh, m.energy_imp_kwh_scaled / 10::float8) AS energy_imp_kwh,
       coalesce(m.energy_exp_kwh, m.energy_exp_kwh_scaled / 10::float8) AS energy_exp_kwh,
       coalesce(m.energy_q_imp_kvarh, m.energy_q_imp_kvarh_scaled / 10::float8) AS energy_q_imp_kvarh,
       coalesce(m.energy_q_exp_kvarh, m.energy_q_exp_kvarh_scaled / 10::float8) AS energy_q_exp_kvarh,
       coalesce(m.thd_v, m.thd_v_scaled / 100::float8) AS thd_v,
       coalesce(m.thd_i, m.thd_i_scaled / 100::float8) AS thd_i
FROM fleet.power_measurements_scaled AS m;

CREATE OR REPLACE FUNCTION fleet.power_measurements_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO fleet.power_measurements_scaled (time, customer_id, device_id, received_at,
        v1, v2, v3, v12, v23, v31, i1, i2, i3, i_n, p1, p2, p3, p_total, q_total, s_total, pf_total, freq, energy_imp_kwh, energy_exp_kwh, energy_q_imp_kvarh, energy_q_exp_kvarh, thd_v, thd_i, v1_scaled, v2_scaled, v3_scaled, v12_scaled, v23_scaled, v31_scaled, i1_scaled, i2_scaled, i3_scaled, i_n_scaled, p1_scaled, p2_scaled, p3_scaled, p_total_scaled, q_total_scaled, s_total_scaled, pf_total_scaled, freq_scaled, energy_imp_kwh_scaled, energy_exp_kwh_scaled, energy_q_imp_kvarh_scaled, energy_q_exp_kvarh_scaled, thd_v_scaled, thd_i_scaled)
    VALUES (NEW.time, NEW.customer_id, NEW.device_id, NEW.received_at,
        CASE WHEN fleet.to_scaled(NEW.v1, 10, 2147483647) IS NULL THEN NEW.v1 END,
        CASE WHEN fleet.to_scaled(NEW.v2, 10, 2147483647) IS NULL THEN NEW.v2 END,
        CASE WHEN fleet.to_scaled(NEW.v3, 10, 2147483647) IS NULL THEN NEW.v3 END,
        CASE WHEN fleet.to_scaled(NEW.v12, 10, 2147483647) IS NULL THEN NEW.v12 END,
        CASE WHEN fleet.to_scaled(NEW.v23, 10, 2147483647) IS NULL THEN NEW.v23 END,
        CASE WHEN fleet.to_scaled(NEW.v31, 10, 2147483647) IS NULL THEN NEW.v31 END,
        CASE WHEN fleet.to_scaled(NEW.i1, 1000, 2147483647) IS NULL THEN NEW.i1 END,
        CASE WHEN fleet.to_scaled(NEW.i2, 1000, 2147483647) IS NULL THEN NEW.i2 END,
        CASE WHEN fleet.to_scaled(NEW.i3, 1000, 2147483647) IS NULL THEN NEW.i3 END,
        CASE WHEN fleet.to_scaled(NEW.i_n, 1000, 2147483647) IS NULL THEN NEW.i_n END,
        CASE WHEN fleet.to_scaled(NEW.p1, 1000, 2147483647) IS NULL THEN NEW.p1 END,
        CASE WHEN fleet.to_scaled(NEW.p2, 1000, 2147483647) IS NULL THEN NEW.p2 END,
        CASE WHEN fleet.to_scaled(NEW.p3, 1000, 2147483647) IS NULL THEN NEW.p3 END,
        CASE WHEN fleet.to_scaled(NEW.p_total, 1000, 2147483647) IS NULL THEN NEW.p_total END,
        CASE WHEN fleet.to_scaled(NEW.q_total, 1000, 2147483647) IS NULL THEN NEW.q_total END,
        CASE WHEN fleet.to_scaled(NEW.s_total, 1000, 2147483647) IS NULL THEN NEW.s_total END,
        CASE WHEN fleet.to_scaled(NEW.pf_total, 1000, 2147483647) IS NULL THEN NEW.pf_total END,
        CASE WHEN fleet.to_scaled(NEW.freq, 100, 2147483647) IS NULL THEN NEW.freq END,
        CASE WHEN fleet.to_scaled(NEW.energy_imp_kwh, 10, 9007199254740992) IS NULL THEN NEW.energy_imp_kwh END,
        CASE WHEN fleet.to_scaled(NEW.energy_exp_kwh, 10, 9007199254740992) IS NULL THEN NEW.energy_exp_kwh END,
        CASE WHEN fleet.to_scaled(NEW.energy_q_imp_kvarh, 10, 9007199254740992) IS NULL THEN NEW.energy_q_imp_kvarh END,
        CASE WHEN fleet.to_scaled(NEW.energy_q_exp_kvarh, 10, 9007199254740992) IS NULL THEN NEW.energy_q_exp_kvarh END,
        CASE WHEN fleet.to_scaled(NEW.thd_v, 100, 2147483647) IS NULL THEN NEW.thd_v END,
        CASE WHEN fleet.to_scaled(NEW.thd_i, 100, 2147483647) IS NULL THEN NEW.thd_i END,
        fleet.to_scaled(NEW.v1, 10, 2147483647),
        fleet.to_scaled(NEW.v2, 10, 2147483647),
        fleet.to_scaled(NEW.v3, 10, 2147483647),
        fleet.to_scaled(NEW.v12, 10, 2147483647),
        fleet.to_scaled(NEW.v23, 10, 2147483647),
        fleet.to_scaled(NEW.v31, 10, 2147483647),
        fleet.to_scaled(NEW.i1, 1000, 2147483647),
        fleet.to_scaled(NEW.i2, 1000, 2147483647),
        fleet.to_scaled(NEW.i3, 1000, 2147483647),
        fleet.to_scaled(NEW.i_n, 1000, 2147483647),
        fleet.to_scaled(NEW.p1, 1000, 2147483647),
        fleet.to_scaled(NEW.p2, 1000, 2147483647),
        fleet.to_scaled(NEW.p3, 1000, 2147483647),
        fleet.to_scaled(NEW.p_total, 1000, 2147483647),
        fleet.to_scaled(NEW.q_total, 1000, 2147483647),
        fleet.to_scaled(NEW.s_total, 1000, 2147483647),
        fleet.to_scaled(NEW.pf_total, 1000, 2147483647),
        fleet.to_scaled(NEW.freq, 100, 2147483647),
        fleet.to_scaled(NEW.energy_imp_kwh, 10, 9007199254740992),
        fleet.to_scaled(NEW.energy_exp_kwh, 10, 9007199254740992),
        fleet.to_scaled(NEW.energy_q_imp_kvarh, 10, 9007199254740992),
        fleet.to_scaled(NEW.energy_q_exp_kvarh, 10, 9007199254740992),
        fleet.to_scaled(NEW.thd_v, 100, 2147483647),
        fleet.to_scaled(NEW.thd_i, 100, 2147483647));
    RETURN NEW;
END
$$;

CREATE OR REPLACE TRIGGER power_measurements_insert
    INSTEAD OF INSERT ON fleet.power_measurements
    FOR EACH ROW EXECUTE FUNCTION fleet.power_measurements_insert();
