-- Per-hour summaries of the four cumulative energy registers, for exact interval energy.
--
-- `fleet.energy_counters(epoch, imp, exp, q_imp, q_exp ORDER BY time)` (epoch: date_part('epoch',
-- time)) walks an hour's samples in time order once and keeps, per register, the first and last
-- sample carrying it, the increase between them with resets counted (a drop: the increase across
-- it is the new value, or 0 if that is negative; as in TimescaleDB Toolkit's counter_agg), the
-- number of drops and the longest spacing between two of its samples; and, over all samples, the
-- longest silence (its two samples). `fleet.counter_of(state, k)` gives register k (1 imp_kwh,
-- 2 exp_kwh, 3 q_imp_kvarh, 4 q_exp_kvarh) as a `fleet.counter_summary`, NULL when no sample of
-- the hour carried it. The state is all double precision and the common case (every register
-- present, none dropped) takes the first branch: the aggregate runs once per sample in every
-- rollup recompute, so its cost is ingest cost (bench/rollup_cost.py).
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
    max_spacing_s double precision
);

CREATE TYPE fleet.energy_counters_state AS (
    first_time_1 double precision,
    first_value_1 double precision,
    last_time_1 double precision,
    last_value_1 double precision,
    increase_1 double precision,
    resets_1 integer,
    max_spacing_1 double precision,
    first_time_2 double precision,
    first_value_2 double precision,
    last_time_2 double precision,
    last_value_2 double precision,
    increase_2 double precision,
    resets_2 integer,
    max_spacing_2 double precision,
    first_time_3 double precision,
    first_value_3 double precision,
    last_time_3 double precision,
    last_value_3 double precision,
    increase_3 double precision,
    resets_3 integer,
    max_spacing_3 double precision,
    first_time_4 double precision,
    first_value_4 double precision,
    last_time_4 double precision,
    last_value_4 double precision,
    increase_4 double precision,
    resets_4 integer,
    max_spacing_4 double precision,
    last_time double precision,
    max_gap double precision,
    max_gap_start double precision,
    max_gap_end double precision
);

CREATE FUNCTION fleet.energy_counters_step(
    s fleet.energy_counters_state, t double precision,
    v1 double precision, v2 double precision, v3 double precision, v4 double precision
) RETURNS fleet.energy_counters_state
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
BEGIN
    -- Rows must arrive in time order: the aggregate is always called with ORDER BY time.
    IF t - s.last_time > s.max_gap THEN
        s.max_gap := t - s.last_time; s.max_gap_start := s.last_time; s.max_gap_end := t;
    ELSIF s.max_gap IS NULL THEN
        s.max_gap := 0; s.max_gap_start := t; s.max_gap_end := t;
    END IF;
    s.last_time := t;
    IF v1 >= s.last_value_1 THEN
        s.increase_1 := s.increase_1 + (v1 - s.last_value_1);
        IF t - s.last_time_1 > s.max_spacing_1 THEN s.max_spacing_1 := t - s.last_time_1; END IF;
        s.last_time_1 := t; s.last_value_1 := v1;
    ELSIF v1 IS NOT NULL THEN
        IF s.last_time_1 IS NULL THEN
            s.first_time_1 := t; s.first_value_1 := v1;
            s.increase_1 := 0; s.resets_1 := 0; s.max_spacing_1 := 0;
        ELSE
            s.increase_1 := s.increase_1 + greatest(v1, 0);
            s.resets_1 := s.resets_1 + 1;
            IF t - s.last_time_1 > s.max_spacing_1 THEN s.max_spacing_1 := t - s.last_time_1; END IF;
        END IF;
        s.last_time_1 := t; s.last_value_1 := v1;
    END IF;
    IF v2 >= s.last_value_2 THEN
        s.increase_2 := s.increase_2 + (v2 - s.last_value_2);
        IF t - s.last_time_2 > s.max_spacing_2 THEN s.max_spacing_2 := t - s.last_time_2; END IF;
        s.last_time_2 := t; s.last_value_2 := v2;
    ELSIF v2 IS NOT NULL THEN
        IF s.last_time_2 IS NULL THEN
            s.first_time_2 := t; s.first_value_2 := v2;
            s.increase_2 := 0; s.resets_2 := 0; s.max_spacing_2 := 0;
        ELSE
            s.increase_2 := s.increase_2 + greatest(v2, 0);
            s.resets_2 := s.resets_2 + 1;
            IF t - s.last_time_2 > s.max_spacing_2 THEN s.max_spacing_2 := t - s.last_time_2; END IF;
        END IF;
        s.last_time_2 := t; s.last_value_2 := v2;
    END IF;
    IF v3 >= s.last_value_3 THEN
        s.increase_3 := s.increase_3 + (v3 - s.last_value_3);
        IF t - s.last_time_3 > s.max_spacing_3 THEN s.max_spacing_3 := t - s.last_time_3; END IF;
        s.last_time_3 := t; s.last_value_3 := v3;
    ELSIF v3 IS NOT NULL THEN
        IF s.last_time_3 IS NULL THEN
            s.first_time_3 := t; s.first_value_3 := v3;
            s.increase_3 := 0; s.resets_3 := 0; s.max_spacing_3 := 0;
        ELSE
            s.increase_3 := s.increase_3 + greatest(v3, 0);
            s.resets_3 := s.resets_3 + 1;
            IF t - s.last_time_3 > s.max_spacing_3 THEN s.max_spacing_3 := t - s.last_time_3; END IF;
        END IF;
        s.last_time_3 := t; s.last_value_3 := v3;
    END IF;
    IF v4 >= s.last_value_4 THEN
        s.increase_4 := s.increase_4 + (v4 - s.last_value_4);
        IF t - s.last_time_4 > s.max_spacing_4 THEN s.max_spacing_4 := t - s.last_time_4; END IF;
        s.last_time_4 := t; s.last_value_4 := v4;
    ELSIF v4 IS NOT NULL THEN
        IF s.last_time_4 IS NULL THEN
            s.first_time_4 := t; s.first_value_4 := v4;
            s.increase_4 := 0; s.resets_4 := 0; s.max_spacing_4 := 0;
        ELSE
            s.increase_4 := s.increase_4 + greatest(v4, 0);
            s.resets_4 := s.resets_4 + 1;
            IF t - s.last_time_4 > s.max_spacing_4 THEN s.max_spacing_4 := t - s.last_time_4; END IF;
        END IF;
        s.last_time_4 := t; s.last_value_4 := v4;
    END IF;
    RETURN s;
END
$$;

CREATE AGGREGATE fleet.energy_counters(
    double precision, double precision, double precision, double precision, double precision
) (
    sfunc = fleet.energy_counters_step,
    stype = fleet.energy_counters_state,
    initcond = '(,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,)'
);

CREATE FUNCTION fleet.counter_of(s fleet.energy_counters_state, k integer)
RETURNS fleet.counter_summary
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE k
        WHEN 1 THEN CASE WHEN s.last_time_1 IS NOT NULL THEN ROW(
            to_timestamp(s.first_time_1), s.first_value_1, to_timestamp(s.last_time_1), s.last_value_1,
            s.increase_1, s.resets_1, s.max_spacing_1)::fleet.counter_summary END
        WHEN 2 THEN CASE WHEN s.last_time_2 IS NOT NULL THEN ROW(
            to_timestamp(s.first_time_2), s.first_value_2, to_timestamp(s.last_time_2), s.last_value_2,
            s.increase_2, s.resets_2, s.max_spacing_2)::fleet.counter_summary END
        WHEN 3 THEN CASE WHEN s.last_time_3 IS NOT NULL THEN ROW(
            to_timestamp(s.first_time_3), s.first_value_3, to_timestamp(s.last_time_3), s.last_value_3,
            s.increase_3, s.resets_3, s.max_spacing_3)::fleet.counter_summary END
        WHEN 4 THEN CASE WHEN s.last_time_4 IS NOT NULL THEN ROW(
            to_timestamp(s.first_time_4), s.first_value_4, to_timestamp(s.last_time_4), s.last_value_4,
            s.increase_4, s.resets_4, s.max_spacing_4)::fleet.counter_summary END
    END
$$;
