-- Notebook instances (SageMaker's model), their single-use presigned URLs and the browser
-- access those URLs grant.
CREATE TABLE notebooks (
    name TEXT PRIMARY KEY,
    instance_type TEXT NOT NULL,
    volume_size_gb BIGINT NOT NULL,
    kms_key_id TEXT NOT NULL,
    owner TEXT,
    state TEXT NOT NULL,
    instance_id TEXT,
    -- The volume's data key, wrapped by the notebook's KMS key.
    wrapped_key TEXT NOT NULL,
    failure_reason TEXT,
    created BIGINT NOT NULL
);
CREATE TABLE notebook_urls (
    url_hash TEXT PRIMARY KEY,
    notebook TEXT NOT NULL,
    session_id TEXT NOT NULL,
    session_expiration BIGINT NOT NULL,
    expires BIGINT NOT NULL,
    redeemed BIGINT,
    created BIGINT NOT NULL
);
CREATE TABLE notebook_access (
    cookie_hash TEXT PRIMARY KEY,
    notebook TEXT NOT NULL,
    session_id TEXT NOT NULL,
    expires BIGINT NOT NULL,
    created BIGINT NOT NULL
);
ALTER TABLE sessions ADD COLUMN notebook_url TEXT;
-- The application a session starts when its URL names none.
ALTER TABLE stacks ADD COLUMN default_application TEXT;
-- Operators' commands in instances, shown to the session's user.
CREATE TABLE instance_execs (
    instance_id TEXT NOT NULL,
    operator TEXT NOT NULL,
    command TEXT NOT NULL,
    exit_code BIGINT,
    time BIGINT NOT NULL
);
CREATE INDEX instance_execs_by_instance ON instance_execs (instance_id);
