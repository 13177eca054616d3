-- Sandbox instances. A row is written before the instance is made, so that a crash at any
-- point leaves a record that reconciliation can act on.
CREATE TABLE instances (
    instance_id TEXT PRIMARY KEY,
    image TEXT NOT NULL,
    instance_type TEXT NOT NULL,
    state TEXT NOT NULL,
    link_index BIGINT NOT NULL,
    host_interface TEXT NOT NULL,
    host_address TEXT NOT NULL,
    private_address TEXT NOT NULL,
    user_id TEXT,
    access_mode TEXT,
    credential_hash TEXT,
    credential_expires BIGINT,
    init_pid BIGINT,
    correlation_id TEXT,
    created BIGINT NOT NULL,
    ended BIGINT
);
CREATE INDEX instances_by_state ON instances (state);
