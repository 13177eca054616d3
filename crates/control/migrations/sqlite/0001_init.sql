-- Parameters: every version is kept (GetParameterHistory); the current one is the highest.
CREATE TABLE parameters (
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    type TEXT NOT NULL,
    value BLOB NOT NULL,
    key_id TEXT,
    description TEXT NOT NULL DEFAULT '',
    last_modified INTEGER NOT NULL,
    modified_by TEXT NOT NULL,
    PRIMARY KEY (name, version)
);

CREATE TABLE buckets (
    name TEXT PRIMARY KEY,
    home_folders INTEGER NOT NULL,
    created INTEGER NOT NULL,
    notification_configuration TEXT NOT NULL
);

-- Objects point at immutable blobs; a write commits by swapping the pointer, so a reader sees
-- the old object or the new one and never a partial one.
CREATE TABLE objects (
    bucket TEXT NOT NULL REFERENCES buckets (name),
    key TEXT NOT NULL,
    blob TEXT NOT NULL,
    size INTEGER NOT NULL,
    etag TEXT NOT NULL,
    content_type TEXT NOT NULL,
    last_modified INTEGER NOT NULL,
    writer TEXT NOT NULL,
    source_ip TEXT NOT NULL,
    PRIMARY KEY (bucket, key)
);

-- Blobs no longer referenced, deleted after the commit that released them (or at start-up).
CREATE TABLE released_blobs (
    blob TEXT PRIMARY KEY
);

-- The notification outbox, written in the same transaction as the object change.
CREATE TABLE notifications (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    bucket TEXT NOT NULL,
    key TEXT NOT NULL,
    configuration_id TEXT NOT NULL,
    function TEXT NOT NULL,
    event TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt INTEGER NOT NULL,
    last_error TEXT
);
CREATE INDEX notifications_by_key ON notifications (bucket, key, seq);

CREATE TABLE keys (
    key_id TEXT PRIMARY KEY,
    description TEXT NOT NULL,
    state TEXT NOT NULL,
    created INTEGER NOT NULL,
    deletion_date INTEGER,
    rotation_period_days INTEGER,
    last_rotated INTEGER NOT NULL,
    current_version INTEGER NOT NULL
);

CREATE TABLE key_material (
    key_id TEXT NOT NULL REFERENCES keys (key_id),
    version INTEGER NOT NULL,
    wrapped BLOB NOT NULL,
    created INTEGER NOT NULL,
    PRIMARY KEY (key_id, version)
);

CREATE TABLE aliases (
    alias_name TEXT PRIMARY KEY,
    target_key_id TEXT NOT NULL REFERENCES keys (key_id),
    created INTEGER NOT NULL
);

-- Short-lived bearer tokens; only their SHA-256 is stored.
CREATE TABLE tokens (
    token_hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    access_mode TEXT NOT NULL,
    roles TEXT NOT NULL,
    correlation_id TEXT NOT NULL,
    created INTEGER NOT NULL,
    expires INTEGER NOT NULL
);
