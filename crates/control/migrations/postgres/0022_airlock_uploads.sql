-- What each researcher added to airlock requests, and when. Every file added stays in the
-- airlock bucket, replaced and removed ones too (nothing may delete from it), so what one
-- researcher may add in a day is bounded (`airlock.max_bytes_per_day`).
CREATE TABLE airlock_uploads (
    creator TEXT NOT NULL,
    bytes BIGINT NOT NULL,
    at BIGINT NOT NULL
);
CREATE INDEX airlock_uploads_by_creator ON airlock_uploads (creator, at);
-- One row per researcher, locked by each addition while it counts.
CREATE TABLE airlock_upload_budgets (
    creator TEXT PRIMARY KEY
);
