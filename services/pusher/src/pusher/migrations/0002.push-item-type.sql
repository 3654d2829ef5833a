-- The shape of one measurement on the wire: row_to_json() of a row of this type gives exactly
-- the protocol's field names, at a fraction of json_build_object()'s cost.
-- depends: 0001.customer-schema

CREATE TYPE app.fleet_push_item AS (
    time        timestamptz,
    device_id   bigint,
    received_at timestamptz,
    v1 double precision,
    v2 double precision,
    v3 double precision,
    v12 double precision,
    v23 double precision,
    v31 double precision,
    i1 double precision,
    i2 double precision,
    i3 double precision,
    i_n double precision,
    p1 double precision,
    p2 double precision,
    p3 double precision,
    p_total double precision,
    q_total double precision,
    s_total double precision,
    pf_total double precision,
    freq double precision,
    energy_imp_kwh double precision,
    energy_exp_kwh double precision,
    energy_q_imp_kvarh double precision,
    energy_q_exp_kvarh double precision,
    thd_v double precision,
    thd_i double precision
);
