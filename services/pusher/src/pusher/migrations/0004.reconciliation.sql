-- Reconciliation (docs/PROTOCOL.md, "Reconciliation"): the pusher's record of its passes, and
-- the known differences between what the gateway and the centre hold per device and UTC hour
-- (rows deleted here but kept centrally, rows the centre refuses), as centre-minus-gateway
-- deltas of (count, key-hash sum), so a later pass spends nothing on them.
-- depends: 0003.push-wire

CREATE TABLE app.fleet_reconcile_state (
    id                    boolean PRIMARY KEY DEFAULT true CHECK (id),
    identity              text,
    last_pass_at          timestamptz,
    last_result           text,
    last_error            text,
    last_compared_cells   integer,
    last_repaired_cells   integer,
    last_rows_resent      bigint,
    last_rows_restored    bigint,
    last_duration_s       double precision,
    last_repair_at        timestamptz,
    passes                bigint NOT NULL DEFAULT 0,
    cells_repaired        bigint NOT NULL DEFAULT 0,
    rows_resent           bigint NOT NULL DEFAULT 0,
    rows_restored         bigint NOT NULL DEFAULT 0,
    bytes_sent            bigint NOT NULL DEFAULT 0
);

CREATE TABLE app.fleet_reconcile_known (
    device_id   bigint NOT NULL,
    hour        timestamptz NOT NULL,
    count_delta bigint NOT NULL,
    hash_delta  numeric(20, 0) NOT NULL,
    noted_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (device_id, hour)
);
