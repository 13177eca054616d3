-- The airlock: requests to move files out of (EXPORT) or into (IMPORT) a workspace, their
-- files (the current manifest; the copies are objects in the airlock bucket), the checks and
-- votes of each submission, and download links (by the SHA-256 of their token).
CREATE TABLE airlock_requests (
    request_id TEXT PRIMARY KEY,
    direction TEXT NOT NULL,
    workspace TEXT NOT NULL,
    creator TEXT NOT NULL,
    creator_name TEXT NOT NULL,
    justification TEXT NOT NULL,
    state TEXT NOT NULL,
    submission BIGINT NOT NULL,
    policy_version TEXT,
    created BIGINT NOT NULL,
    updated BIGINT NOT NULL,
    released BIGINT,
    expires BIGINT,
    correlation_id TEXT,
    release_record TEXT
);
CREATE INDEX airlock_requests_by_creator ON airlock_requests (creator);
CREATE TABLE airlock_files (
    request_id TEXT NOT NULL,
    path TEXT NOT NULL,
    size BIGINT NOT NULL,
    sha256 TEXT NOT NULL,
    -- Where the copy is in the airlock bucket: a key of its own for each addition, so a later
    -- write can never replace the bytes a manifest names.
    object_key TEXT NOT NULL,
    added BIGINT NOT NULL,
    PRIMARY KEY (request_id, path)
);
CREATE INDEX airlock_files_by_hash ON airlock_files (sha256);
CREATE TABLE airlock_checks (
    request_id TEXT NOT NULL,
    submission BIGINT NOT NULL,
    path TEXT NOT NULL,
    rule TEXT NOT NULL,
    outcome TEXT NOT NULL,
    detail TEXT NOT NULL,
    policy_version TEXT NOT NULL
);
CREATE INDEX airlock_checks_by_request ON airlock_checks (request_id, submission);
CREATE TABLE airlock_votes (
    request_id TEXT NOT NULL,
    submission BIGINT NOT NULL,
    reviewer TEXT NOT NULL,
    reviewer_name TEXT NOT NULL,
    decision TEXT NOT NULL,
    comment TEXT,
    cast_at BIGINT NOT NULL,
    PRIMARY KEY (request_id, submission, reviewer)
);
CREATE TABLE airlock_links (
    token_hash TEXT PRIMARY KEY,
    request_id TEXT NOT NULL,
    path TEXT NOT NULL,
    user_id TEXT NOT NULL,
    expires BIGINT NOT NULL,
    created BIGINT NOT NULL
);
