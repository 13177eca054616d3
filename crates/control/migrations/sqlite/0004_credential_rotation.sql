-- A rotated credential stays valid until its own expiry, so a call in flight is not refused.
ALTER TABLE instances ADD COLUMN previous_credential_hash TEXT;
ALTER TABLE instances ADD COLUMN previous_credential_expires INTEGER;
