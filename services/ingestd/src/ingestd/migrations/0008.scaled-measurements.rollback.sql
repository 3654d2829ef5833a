-- Back to float8 only: every value is written back into its float8 column first (one
-- statement over the whole table: for a large database, see docs/OPERATIONS.md "Rolling back
-- the scaled layout"), then the integer columns, the view and its functions go. On TimescaleDB
-- the hourly aggregate reads the integer columns: it is dropped here and rebuilt from the raw
-- rows by the older ingestd's bootstrap.
DO $$
DECLARE
    continuous boolean := false;
BEGIN
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') THEN
        EXECUTE $q$SELECT EXISTS (SELECT 1 FROM timescaledb_information.continuous_aggregates
                                  WHERE view_schema = 'fleet' AND view_name = 'hourly_per_device')$q$
            INTO continuous;
    END IF;
    IF continuous THEN
        EXECUTE 'DROP MATERIALIZED VIEW fleet.hourly_per_device';
    END IF;
END
$$;
DROP TRIGGER power_measurements_insert ON fleet.power_measurements;
DROP FUNCTION fleet.power_measurements_insert();
DROP VIEW fleet.power_measurements;
UPDATE fleet.power_measurements_scaled SET
    v1 = coalesce(v1, v1_scaled / 10::float8),
    v2 = coalesce(v2, v2_scaled / 10::float8),
    v3 = coalesce(v3, v3_scaled / 10::float8),
    v12 = coalesce(v12, v12_scaled / 10::float8),
    v23 = coalesce(v23, v23_scaled / 10::float8),
    v31 = coalesce(v31, v31_scaled / 10::float8),
    i1 = coalesce(i1, i1_scaled / 1000::float8),
    i2 = coalesce(i2, i2_scaled / 1000::float8),
    i3 = coalesce(i3, i3_scaled / 1000::float8),
    i_n = coalesce(i_n, i_n_scaled / 1000::float8),
    p1 = coalesce(p1, p1_scaled / 1000::float8),
    p2 = coalesce(p2, p2_scaled / 1000::float8),
    p3 = coalesce(p3, p3_scaled / 1000::float8),
    p_total = coalesce(p_total, p_total_scaled / 1000::float8),
    q_total = coalesce(q_total, q_total_scaled / 1000::float8),
    s_total = coalesce(s_total, s_total_scaled / 1000::float8),
    pf_total = coalesce(pf_total, pf_total_scaled / 1000::float8),
    freq = coalesce(freq, freq_scaled / 100::float8),
    energy_imp_kwh = coalesce(energy_imp_kwh, energy_imp_kwh_scaled / 10::float8),
    energy_exp_kwh = coalesce(energy_exp_kwh, energy_exp_kwh_scaled / 10::float8),
    energy_q_imp_kvarh = coalesce(energy_q_imp_kvarh, energy_q_imp_kvarh_scaled / 10::float8),
    energy_q_exp_kvarh = coalesce(energy_q_exp_kvarh, energy_q_exp_kvarh_scaled / 10::float8),
    thd_v = coalesce(thd_v, thd_v_scaled / 100::float8),
    thd_i = coalesce(thd_i, thd_i_scaled / 100::float8)
WHERE v1_scaled IS NOT NULL OR v2_scaled IS NOT NULL OR v3_scaled IS NOT NULL OR v12_scaled IS NOT NULL OR v23_scaled IS NOT NULL OR v31_scaled IS NOT NULL OR i1_scaled IS NOT NULL OR i2_scaled IS NOT NULL OR i3_scaled IS NOT NULL OR i_n_scaled IS NOT NULL OR p1_scaled IS NOT NULL OR p2_scaled IS NOT NULL OR p3_scaled IS NOT NULL OR p_total_scaled IS NOT NULL OR q_total_scaled IS NOT NULL OR s_total_scaled IS NOT NULL OR pf_total_scaled IS NOT NULL OR freq_scaled IS NOT NULL OR energy_imp_kwh_scaled IS NOT NULL OR energy_exp_kwh_scaled IS NOT NULL OR energy_q_imp_kvarh_scaled IS NOT NULL OR energy_q_exp_kvarh_scaled IS NOT NULL OR thd_v_scaled IS NOT NULL OR thd_i_scaled IS NOT NULL;
ALTER TABLE fleet.power_measurements_scaled
    DROP COLUMN v1_scaled,
    DROP COLUMN v2_scaled,
    DROP COLUMN v3_scaled,
    DROP COLUMN v12_scaled,
    DROP COLUMN v23_scaled,
    DROP COLUMN v31_scaled,
    DROP COLUMN i1_scaled,
    DROP COLUMN i2_scaled,
    DROP COLUMN i3_scaled,
    DROP COLUMN i_n_scaled,
    DROP COLUMN p1_scaled,
    DROP COLUMN p2_scaled,
    DROP COLUMN p3_scaled,
    DROP COLUMN p_total_scaled,
    DROP COLUMN q_total_scaled,
    DROP COLUMN s_total_scaled,
    DROP COLUMN pf_total_scaled,
    DROP COLUMN freq_scaled,
    DROP COLUMN energy_imp_kwh_scaled,
    DROP COLUMN energy_exp_kwh_scaled,
    DROP COLUMN energy_q_imp_kvarh_scaled,
    DROP COLUMN energy_q_exp_kvarh_scaled,
    DROP COLUMN thd_v_scaled,
    DROP COLUMN thd_i_scaled;
ALTER TABLE fleet.power_measurements_scaled RENAME TO power_measurements;
DROP FUNCTION fleet.to_scaled(double precision, double precision, double precision);
