-- The deployment engine's state: what each deploy applied, the resources as last deployed
-- (what `diff` compares the spec with), and the stack events shown to the operator.
CREATE TABLE deployments (
    deployment_id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    spec_text TEXT,
    overrides TEXT,
    started BIGINT NOT NULL,
    finished BIGINT
);
CREATE TABLE deployed_resources (
    logical_id TEXT PRIMARY KEY,
    stack TEXT NOT NULL,
    kind TEXT NOT NULL,
    properties TEXT NOT NULL
);
CREATE TABLE stack_events (
    deployment_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    client_token TEXT,
    stack TEXT NOT NULL,
    logical_id TEXT NOT NULL,
    resource_type TEXT NOT NULL,
    status TEXT NOT NULL,
    reason TEXT,
    time BIGINT NOT NULL,
    PRIMARY KEY (deployment_id, seq)
);
CREATE INDEX stack_events_by_token ON stack_events (client_token);
