-- Nodes sharing this metadata store. Each holds a lease (`lease_expires`, Unix ms) that it
-- renews every heartbeat; `epoch` grows each time the node joins, and what the node owns
-- carries the epoch it was written under, so a node that lost its lease can change nothing.
-- `state`: ACTIVE, LOST (its lease ran out and another node took it for lost) or STOPPED
-- (it left cleanly). `data_dir` tells a restart of the same node from a second process.
CREATE TABLE nodes (
    name TEXT PRIMARY KEY,
    epoch BIGINT NOT NULL,
    state TEXT NOT NULL,
    address TEXT NOT NULL,
    host TEXT NOT NULL,
    data_dir TEXT NOT NULL,
    vpc_cidr TEXT NOT NULL,
    started BIGINT NOT NULL,
    heartbeat BIGINT NOT NULL,
    lease_expires BIGINT NOT NULL,
    lost_at BIGINT,
    instances BIGINT NOT NULL DEFAULT 0,
    id_slots BIGINT NOT NULL DEFAULT 0
);
-- The node that runs an instance, and the epoch of its lease when it started it.
ALTER TABLE instances ADD COLUMN node TEXT;
ALTER TABLE instances ADD COLUMN node_epoch BIGINT;
-- Secrets every node must share (wrapped with the master key, base64), and a value that
-- proves a node's master key is the one the others use.
CREATE TABLE cluster_secrets (
    name TEXT PRIMARY KEY,
    wrapped TEXT NOT NULL
);
-- The node that took a queued session to start its instance (ON_DEMAND): one node per session.
ALTER TABLE sessions ADD COLUMN node TEXT;
-- A session handed to the node that runs its instance: a one-time code (its hash) and until
-- when it may be used.
ALTER TABLE sessions ADD COLUMN handoff_hash TEXT;
ALTER TABLE sessions ADD COLUMN handoff_expires BIGINT;
