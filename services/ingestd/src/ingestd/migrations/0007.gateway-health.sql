-- Gateway health (issue 20, docs/PROTOCOL.md "Health reports"): the latest report of each gateway
-- (one push token = one gateway), a bounded history of reports (INGESTD_GATEWAY_REPORT_RETENTION_DAYS,
-- deleted in batches through the BRIN index like the audit trail), and the states the housekeeping
-- derives from them and from the meters' data (for the dashboard and the centre's metrics).
-- depends: 0006.reconciliation

CREATE TABLE fleet.gateways (
    token_hash        bytea PRIMARY KEY REFERENCES fleet.customer_tokens (token_hash) ON DELETE CASCADE,
    customer_id       bigint NOT NULL REFERENCES fleet.customers (id) ON DELETE CASCADE,
    first_report_at   timestamptz NOT NULL DEFAULT now(),
    last_report_at    timestamptz NOT NULL DEFAULT now(),
    -- The last request of any kind with this token (batches flushed from memory every
    -- INGESTD_FLEET_STATE_INTERVAL_S): a gateway shipping every minute needs no report to be alive.
    last_contact_at   timestamptz NOT NULL DEFAULT now(),
    reports           bigint NOT NULL DEFAULT 1,
    version           text NOT NULL,
    wire_format       text NOT NULL,
    started_at        timestamptz,
    push_interval_s   double precision,
    heartbeat_s       double precision,
    backlog_rows      bigint NOT NULL DEFAULT 0,
    lag_s             double precision,
    oldest_unshipped_age_s double precision,
    failures          bigint NOT NULL DEFAULT 0,
    last_error        text,
    quarantined_rows  bigint NOT NULL DEFAULT 0,
    blocking_age_s    double precision,
    db_bytes          bigint,
    disk_free_bytes   bigint,
    clock_offset_s    double precision,
    upload_cap        bigint NOT NULL DEFAULT 0,
    sent_bytes        bigint NOT NULL DEFAULT 0,
    host              text,
    implausible       text[] NOT NULL DEFAULT '{}',
    report            jsonb NOT NULL,
    -- Written by the housekeeping from the same classification the read API uses.
    states            text[] NOT NULL DEFAULT '{}',
    states_at         timestamptz
);
CREATE INDEX gateways_customer_idx ON fleet.gateways (customer_id);

CREATE TABLE fleet.gateway_reports (
    token_hash  bytea NOT NULL REFERENCES fleet.customer_tokens (token_hash) ON DELETE CASCADE,
    received_at timestamptz NOT NULL DEFAULT now(),
    customer_id bigint NOT NULL,
    report      jsonb NOT NULL,
    implausible text[] NOT NULL DEFAULT '{}',
    PRIMARY KEY (token_hash, received_at)
);
CREATE INDEX gateway_reports_received_brin ON fleet.gateway_reports USING brin (received_at);

-- Meter states (silent, frozen, implausible), derived by the housekeeping for every device.
CREATE TABLE fleet.device_states (
    customer_id bigint NOT NULL REFERENCES fleet.customers (id) ON DELETE CASCADE,
    device_id   bigint NOT NULL,
    state       text NOT NULL,
    since       timestamptz NOT NULL DEFAULT now(),
    checked_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (customer_id, device_id)
);
