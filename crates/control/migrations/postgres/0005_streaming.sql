-- Fleets, stacks, streaming URLs and sessions (AppStream's model).
CREATE TABLE fleets (
    name TEXT PRIMARY KEY,
    image TEXT NOT NULL,
    instance_type TEXT NOT NULL,
    fleet_type TEXT NOT NULL,
    desired_instances BIGINT NOT NULL,
    max_user_duration BIGINT NOT NULL,
    disconnect_timeout BIGINT NOT NULL,
    idle_disconnect_timeout BIGINT NOT NULL,
    stream_view TEXT NOT NULL,
    description TEXT NOT NULL,
    state TEXT NOT NULL,
    created BIGINT NOT NULL
);
CREATE TABLE stacks (
    name TEXT PRIMARY KEY,
    fleet TEXT,
    description TEXT NOT NULL,
    user_settings TEXT NOT NULL,
    home_folders_bucket TEXT,
    redirect_url TEXT,
    created BIGINT NOT NULL
);
-- A streaming URL is single-use: `redeemed` is set once, atomically.
CREATE TABLE streaming_urls (
    url_id TEXT PRIMARY KEY,
    stack TEXT NOT NULL,
    fleet TEXT NOT NULL,
    user_id TEXT NOT NULL,
    application_id TEXT,
    session_context TEXT,
    expires BIGINT NOT NULL,
    redeemed BIGINT,
    created BIGINT NOT NULL
);
CREATE TABLE sessions (
    session_id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    authentication_type TEXT NOT NULL,
    stack TEXT NOT NULL,
    fleet TEXT NOT NULL,
    application_id TEXT,
    session_context TEXT,
    state TEXT NOT NULL,
    connection_state TEXT NOT NULL,
    instance_id TEXT,
    private_address TEXT,
    -- The stack's settings and the fleet's timeouts as they were when the session started.
    settings TEXT NOT NULL,
    correlation_id TEXT NOT NULL,
    cookie_hash TEXT NOT NULL,
    queued BIGINT NOT NULL,
    start_time BIGINT NOT NULL,
    active_time BIGINT,
    max_expiration BIGINT NOT NULL,
    last_input BIGINT NOT NULL,
    disconnected_at BIGINT,
    connected_once BIGINT NOT NULL,
    client_ips TEXT NOT NULL,
    end_time BIGINT,
    end_reason TEXT
);
CREATE INDEX sessions_by_state ON sessions (state);
CREATE INDEX sessions_by_stack_fleet ON sessions (stack, fleet, start_time);
ALTER TABLE instances ADD COLUMN fleet TEXT;
ALTER TABLE instances ADD COLUMN session_id TEXT;
