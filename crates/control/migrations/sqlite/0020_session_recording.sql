-- Session recording (DataSandbox's own stack setting, `SessionRecording`: ENABLED or
-- DISABLED), and the sealed segments of each recorded session (`recordings`). A segment's
-- stored bytes are an object of the `datasandbox-recordings` bucket; its SHA-256 is also in
-- the trail's `RecordingSegmentSealed` record.
ALTER TABLE stacks ADD COLUMN session_recording TEXT;
CREATE TABLE recording_segments (
    session_id TEXT NOT NULL,
    segment BIGINT NOT NULL,
    node TEXT NOT NULL,
    object_key TEXT NOT NULL,
    size BIGINT NOT NULL,
    sha256 TEXT NOT NULL,
    started BIGINT NOT NULL,
    ended BIGINT NOT NULL,
    -- 1 when the segment was sealed by its recorder; 0 when sealed after a crash.
    complete BIGINT NOT NULL,
    -- 1 when the recording ended with this segment.
    last BIGINT NOT NULL,
    PRIMARY KEY (session_id, segment)
);
