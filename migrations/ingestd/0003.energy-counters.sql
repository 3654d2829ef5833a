-- Per-hour summaries of the four cumulative energy registers, for exact interval energy.
--
-- `fleet.energy_counters(time, imp, exp, q_imp, q_exp ORDER BY time)` walks a bucket's samples in
-- time order once and keeps, per register, the first and last sample carrying it, the increase
-- between them with resets counted (a drop: the increase across it is the new value, or 0 if
-- that is negative; as in TimescaleDB Toolkit's counter_agg), the number of drops, the number of samples and the longest
-- spacing between two of them; and, over all samples, the longest spacing (its two samples).
-- `fleet.counter_of(state, k)` gives register k (1 imp_kwh, 2 exp_kwh, 3 q_imp_kvarh,
-- 4 q_exp_kvarh) as a `fleet.counter_summary`, NULL when no sample in the bucket carried it.
-- The hourly aggregate stores these (both storage paths); the energy of any interval is computed
-- from them at read time (ingestd/storage/energy.py). See docs/ENERGY.md.
-- depends: 0002.hourly-dirty-buckets

CREATE TYPE fleet.counter_summary AS (
    first_time    timestamptz,
    first_value   double precision,
    last_time     timestamptz,
    last_value    double precision,
    increase      double precision,
    resets        integer,
    samples       integer,
    max_spacing_s double precision
);

CREATE TYPE fleet.energy_counters_state AS (
    first_time_1 timestamptz,
    first_value_1 double precision,
    last_time_1 timestamptz,
    last_value_1 double precision,
    increase_1 double precision,
    resets_1 integer,
    samples_1 integer,
    max_spacing_1 double precision,
    first_time_2 timestamptz,
    first_value_2 double precision,
    last_time_2 timestamptz,
    last_value_2 double precision,
    increase_2 double precision,
    resets_2 integer,
    samples_2 integer,
    max_spacing_2 double precision,
    first_time_3 timestamptz,
    first_value_3 double precision,
    last_time_3 timestamptz,
    last_value_3 double precision,
    increase_3 double precision,
    resets_3 integer,
    samples_3 integer,
    max_spacing_3 double precision,
    first_time_4 timestamptz,
    first_value_4 double precision,
    last_time_4 timestamptz,
    last_value_4 double precision,
    increase_4 double precision,
    resets_4 integer,
    samples_4 integer,
    max_spacing_4 double precision,
    last_time timestamptz,
    max_gap_start timestamptz,
    max_gap_end timestamptz
);

CREATE FUNCTION fleet.energy_counters_step(
    s fleet.energy_counters_state, t timestamptz,
    v1 double precision, v2 double precision, v3 double precision, v4 double precision
) RETURNS fleet.energy_counters_state
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    epoch double precision := date_part('epoch', t);
BEGIN
    -- Rows must arrive in time order: the aggregate is always called with ORDER BY time.
    IF s.last_time IS NOT NULL
       AND (s.max_gap_start IS NULL OR t - s.last_time > s.max_gap_end - s.max_gap_start) THEN
        s.max_gap_start := s.last_time;
        s.max_gap_end := t;
    END IF;
    s.last_time := t;
    IF v1 IS NOT NULL THEN
        IF s.samples_1 IS NULL THEN
            s.first_time_1 := t; s.first_value_1 := v1;
            s.increase_1 := 0; s.resets_1 := 0; s.samples_1 := 1; s.max_spacing_1 := 0;
        ELSE
            IF v1 >= s.last_value_1 THEN
                s.increase_1 := s.increase_1 + (v1 - s.last_value_1);
            ELSE
                s.increase_1 := s.increase_1 + greatest(v1, 0);
                s.resets_1 := s.resets_1 + 1;
            END IF;
            s.samples_1 := s.samples_1 + 1;
            s.max_spacing_1 := greatest(s.max_spacing_1, epoch - date_part('epoch', s.last_time_1));
        END IF;
        s.last_time_1 := t; s.last_value_1 := v1;
    END IF;
    IF v2 IS NOT NULL THEN
        IF s.samples_2 IS NULL THEN
            s.first_time_2 := t; s.first_value_2 := v2;
            s.increase_2 := 0; s.resets_2 := 0; s.samples_2 := 1; s.max_spacing_2 := 0;
        ELSE
            IF v2 >= s.last_value_2 THEN
                s.increase_2 := s.increase_2 + (v2 - s.last_value_2);
            ELSE
                s.increase_2 := s.increase_2 + greatest(v2, 0);
                s.resets_2 := s.resets_2 + 1;
            END IF;
            s.samples_2 := s.samples_2 + 1;
            s.max_spacing_2 := greatest(s.max_spacing_2, epoch - date_part('epoch', s.last_time_2));
        END IF;
        s.last_time_2 := t; s.last_value_2 := v2;
    END IF;
    IF v3 IS NOT NULL THEN
        IF s.samples_3 IS NULL THEN
            s.first_time_3 := t; s.first_value_3 := v3;
            s.increase_3 := 0; s.resets_3 := 0; s.samples_3 := 1; s.max_spacing_3 := 0;
        ELSE
            IF v3 >= s.last_value_3 THEN
                s.increase_3 := s.increase_3 + (v3 - s.last_value_3);
            ELSE
                s.increase_3 := s.increase_3 + greatest(v3, 0);
                s.resets_3 := s.resets_3 + 1;
            END IF;
            s.samples_3 := s.samples_3 + 1;
            s.max_spacing_3 := greatest(s.max_spacing_3, epoch - date_part('epoch', s.last_time_3));
        END IF;
        s.last_time_3 := t; s.last_value_3 := v3;
    END IF;
    IF v4 IS NOT NULL THEN
        IF s.samples_4 IS NULL THEN
            s.first_time_4 := t; s.first_value_4 := v4;
            s.increase_4 := 0; s.resets_4 := 0; s.samples_4 := 1; s.max_spacing_4 := 0;
        ELSE
            IF v4 >= s.last_value_4 THEN
                s.increase_4 := s.increase_4 + (v4 - s.last_value_4);
            ELSE
                s.increase_4 := s.increase_4 + greatest(v4, 0);
                s.resets_4 := s.resets_4 + 1;
            END IF;
            s.samples_4 := s.samples_4 + 1;
            s.max_spacing_4 := greatest(s.max_spacing_4, epoch - date_part('epoch', s.last_time_4));
        END IF;
        s.last_time_4 := t; s.last_value_4 := v4;
    END IF;
    RETURN s;
END
$$;

CREATE AGGREGATE fleet.energy_counters(
    timestamptz, double precision, double precision, double precision, double precision
) (
    sfunc = fleet.energy_counters_step,
    stype = fleet.energy_counters_state,
    initcond = '(,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,)'
);

CREATE FUNCTION fleet.counter_of(s fleet.energy_counters_state, k integer)
RETURNS fleet.counter_summary
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE k
        WHEN 1 THEN CASE WHEN s.samples_1 IS NULL THEN NULL ELSE ROW(s.first_time_1, s.first_value_1, s.last_time_1, s.last_value_1, s.increase_1, s.resets_1, s.samples_1, s.max_spacing_1)::fleet.counter_summary END
        WHEN 2 THEN CASE WHEN s.samples_2 IS NULL THEN NULL ELSE ROW(s.first_time_2, s.first_value_2, s.last_time_2, s.last_value_2, s.increase_2, s.resets_2, s.samples_2, s.max_spacing_2)::fleet.counter_summary END
        WHEN 3 THEN CASE WHEN s.samples_3 IS NULL THEN NULL ELSE ROW(s.first_time_3, s.first_value_3, s.last_time_3, s.last_value_3, s.increase_3, s.resets_3, s.samples_3, s.max_spacing_3)::fleet.counter_summary END
        WHEN 4 THEN CASE WHEN s.samples_4 IS NULL THEN NULL ELSE ROW(s.first_time_4, s.first_value_4, s.last_time_4, s.last_value_4, s.increase_4, s.resets_4, s.samples_4, s.max_spacing_4)::fleet.counter_summary END
    END
$$;
